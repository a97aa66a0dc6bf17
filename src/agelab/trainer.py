"""The training loop: one loop for every model, driven by the model's phases.

    for each iteration:
        x = next data batch                       # (B, C, S, S) in [-1, 1], already on the device
        for phase in model.phases():              # AGE: encoder x1, generator x n_gen_steps
            freeze all parameters but phase.module's
            repeat phase.repeats times: zero_grad, loss = phase.loss(x), backward, step
        every log_every:    one line in metrics.jsonl (the only host sync)
        every sample_every: sample and reconstruction grids
        every ckpt_every:   an atomic checkpoint

The trainer knows nothing of AGE: losses, passes and what is detached live in
the model (:mod:`agelab.models.age`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from agelab import checkpoint as ckpt
from agelab.config import ConfigError, TrainConfig
from agelab.data import ImageData, load_dataset, to_float
from agelab.models.age import AGE, GameConfig, ModelConfig
from agelab.runs import MetricsLog, create_run_dir, write_status

# Options that may differ when a run is resumed (they do not change the model or its training math).
RESUMABLE_CHANGES = ("iterations", "device", "threads", "no_download", "log_every", "sample_every", "ckpt_every", "keep_ckpts")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name} requested but CUDA is not available")
    return torch.device(name)


def build_model(cfg: TrainConfig, channels: int) -> AGE:
    model_cfg = ModelConfig(latent_dim=cfg.latent_dim, channels=channels, image_size=cfg.image_size,
                            width=cfg.width, prior=cfg.prior)
    game = GameConfig(divergence=cfg.divergence, mu=cfg.mu, lam=cfg.lam, no_recon=cfg.no_recon,
                      enc_latent_recon=cfg.enc_latent_recon, gen_image_recon=cfg.gen_image_recon, n_gen_steps=cfg.n_gen_steps, knn_k=cfg.knn_k,
                      knn_prior_samples=cfg.knn_prior_samples)
    return AGE(model_cfg, game)


class BatchOrder:
    """Deterministic data order: epoch e is a permutation seeded by (seed, e); the last partial batch is dropped.

    The batch of any iteration follows from the iteration number alone, so a
    resumed run reads exactly the batches the uninterrupted run would have.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ConfigError(f"--batch-size: {batch_size} is larger than the dataset ({n} images)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, j = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[j * self.batch_size : (j + 1) * self.batch_size]


@contextmanager
def _stop_on_signals():
    """SIGTERM / SIGINT set a flag; the loop checkpoints and leaves cleanly at the next iteration."""
    flag = {"stop": None}
    handlers = {}

    def handler(signum, frame):
        flag["stop"] = signal.Signals(signum).name

    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: no signal handling
        pass
    try:
        yield flag
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resume_config(saved: TrainConfig, overrides: dict) -> TrainConfig:
    """The run's own config, with only the harmless options changed by ``overrides``."""
    saved_d = saved.to_dict()
    for k, v in overrides.items():
        if v is None or k in RESUMABLE_CHANGES or saved_d.get(k) == v:
            continue
        raise ConfigError(f"--{k.replace('_', '-')}: the run was trained with {saved_d.get(k)!r}, cannot resume "
                          f"with {v!r}; only {', '.join(RESUMABLE_CHANGES)} may change on resume")
    return saved.replace(**{k: v for k, v in overrides.items() if v is not None and k in RESUMABLE_CHANGES}).validate()


def train(cfg: TrainConfig | None = None, *, resume: str | os.PathLike | None = None,
          overrides: dict | None = None, progress: bool = True) -> Path:
    """Train a model and return its run folder.

    ``cfg`` starts a new run. ``resume`` (a run folder) continues that run from
    its newest good checkpoint with the run's saved config; ``overrides`` may
    change only the options in ``RESUMABLE_CHANGES`` (e.g. more iterations).
    """
    start_step, state = 0, None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise ckpt.CheckpointError(f"{run_dir}: not a run folder (no config.json)")
        saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        cfg = check_resume_config(saved, overrides or {})
        ckpt_path = ckpt.latest_good_checkpoint(run_dir / "checkpoints")
        if ckpt_path is None:
            raise ckpt.CheckpointError(f"{run_dir}: no valid checkpoint to resume from")
        state = ckpt.load_state(ckpt_path)
        start_step = int(state["step"])
    elif cfg is None:
        raise ValueError("train() needs a config or a run folder to resume")
    cfg = cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # Data first: a missing dataset must fail before any run folder exists.
    train_data = load_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root, not cfg.no_download, progress)
    test_data = load_dataset(cfg.dataset, "test", cfg.image_size, cfg.data_root, not cfg.no_download, progress)
    order = BatchOrder(len(train_data), cfg.batch_size, cfg.seed)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train_data.channels).to(device)
    phases = model.phases()
    optimizers = {p.name: torch.optim.Adam(p.module.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=True)
                  for p in phases}

    if state is not None:
        model_cfg, weights = ckpt.load_model_files(ckpt_path)
        if model_cfg != model.cfg.to_dict():
            raise ckpt.CheckpointError(f"{ckpt_path}: checkpoint is of another model config than {run_dir}/config.json")
        model.load_state_dict(weights)
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        _set_rng_state(state["rng"])
    else:
        run_dir = create_run_dir(cfg.out_dir, cfg.dataset, cfg.tag)
        (run_dir / "config.json").write_text(cfg.to_json())

    images = train_data.images.to(device)  # (N, C, S, S) uint8, resident on the device
    fixed_test = to_float(test_data.images[:32]).to(device)  # held-out images for the reconstruction grid

    def save(step: int) -> None:
        st = {"step": step, "optimizers": {k: o.state_dict() for k, o in optimizers.items()}, "rng": _rng_state()}
        ckpt.save_checkpoint(run_dir / "checkpoints", step, model, model.cfg.to_dict(), st, keep=cfg.keep_ckpts)

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    finite = torch.ones((), dtype=torch.bool, device=device)
    t_window, n_window = time.perf_counter(), 0
    step = start_step
    stopped_by = None
    bar = tqdm(total=cfg.iterations, initial=start_step, disable=not progress, desc=f"train {run_dir.name}",
               unit="it", dynamic_ncols=True)
    log = None
    try:
        write_status(run_dir, "running", step=start_step)
        log = MetricsLog(run_dir)
        log.truncate_after(start_step)
        with _stop_on_signals() as flag:
            model.train()
            while step < cfg.iterations:
                lr = cfg.lr * 0.5 ** (step // cfg.lr_halve_every) if cfg.lr_halve_every else cfg.lr
                x = to_float(images[order.indices(step).to(device)])  # (B, C, S, S) in [-1, 1]
                for phase in phases:
                    for p in phases:  # only this phase's network gets weight gradients
                        p.module.requires_grad_(p is phase)
                    opt = optimizers[phase.name]
                    for group in opt.param_groups:
                        group["lr"] = lr
                    for _ in range(phase.repeats):
                        opt.zero_grad(set_to_none=True)
                        loss, logs = phase.loss(x)
                        loss.backward()
                        opt.step()
                        finite &= torch.isfinite(loss)
                        for k, v in logs.items():
                            key = f"{phase.name}/{k}"
                            sums[key] = sums.get(key, 0) + v
                            counts[key] = counts.get(key, 0) + 1
                step += 1
                n_window += x.shape[0]
                bar.update(1)

                if step % cfg.log_every == 0 or step == cfg.iterations:
                    if not bool(finite):
                        raise TrainingError(f"non-finite loss before step {step}; last losses: "
                                            + ", ".join(f"{k}={(sums[k] / counts[k]).item():.4g}" for k in sums))
                    dt = time.perf_counter() - t_window
                    values = {k: (sums[k] / counts[k]).item() for k in sorted(sums)}
                    values.update(epoch=step / order.per_epoch, lr=lr, img_per_s=n_window / max(dt, 1e-9))
                    log.write(step, values)
                    bar.set_postfix({"enc": f"{values.get('enc/loss', 0):.3g}", "gen": f"{values.get('gen/loss', 0):.3g}",
                                     "img/s": f"{values['img_per_s']:.0f}"})
                    sums, counts = {}, {}
                    t_window, n_window = time.perf_counter(), 0
                if step % cfg.sample_every == 0 or step == cfg.iterations:
                    write_grids(model, run_dir / "grids", step, fixed_test)
                if step % cfg.ckpt_every == 0 or step == cfg.iterations:
                    save(step)
                if flag["stop"] is not None and step < cfg.iterations:
                    stopped_by = flag["stop"]
                    save(step)
                    break
        bar.close()
        if stopped_by is None:
            for p in phases:
                p.module.requires_grad_(True)
            finish_run(model, run_dir, test_data, step, device)
    except BaseException as exc:
        bar.close()
        if log is not None:
            log.close()
        write_status(run_dir, "failed", step=step, error=f"{type(exc).__name__}: {exc}")
        raise
    log.close()
    if stopped_by is not None:
        write_status(run_dir, "interrupted", step=step, signal=stopped_by)
        print(f"agelab: stopped by {stopped_by} at iteration {step}; checkpoint saved. "
              f"Resume with: agelab train --resume {run_dir}")
        return run_dir
    write_status(run_dir, "finished", step=step)
    return run_dir


@torch.no_grad()
def write_grids(model: AGE, folder: Path, step: int, fixed_test: torch.Tensor) -> None:
    from agelab.sampling import reconstruction_pairs, sample_images, save_grid

    folder.mkdir(exist_ok=True)
    was_training = model.training
    model.eval()
    save_grid(sample_images(model, 64, seed=0), folder / f"samples-{step:07d}.png")
    save_grid(reconstruction_pairs(model, fixed_test), folder / f"recon-{step:07d}.png")
    model.train(was_training)


@torch.no_grad()
def finish_run(model: AGE, run_dir: Path, test_data: ImageData, step: int, device: torch.device) -> dict:
    """Final samples, held-out reconstructions, interpolations, summary.json and report.html."""
    from agelab.report import write_report
    from agelab.sampling import interpolation_rows, reconstruction_errors, reconstruction_pairs, sample_images, save_grid

    model.eval()
    x_test = to_float(test_data.images).to(device)
    save_grid(sample_images(model, 64, seed=0), run_dir / "samples.png")
    save_grid(reconstruction_pairs(model, x_test[:32]), run_dir / "reconstructions.png")
    save_grid(interpolation_rows(model, x_test[:8], x_test[8:16], steps=8), run_dir / "interpolations.png")
    errors = reconstruction_errors(model, x_test)
    summary = {"step": step, "test_images": len(x_test), "test_reconstruction": errors,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(run_dir)
    return summary

