"""The training loop: one loop for every model, driven by the model's phases.

    for each iteration:
        batch = model.prepare_batch(next images)  # AGE: x (B, C, S, S) in [-1, 1]; colorization: (ab, L)
        for phase in model.phases():              # AGE: encoder x1, generator x n_gen_steps; pix2pix: disc, gen
            freeze all parameters but phase.module's
            b = phase.begin(batch) if it has one, else batch   # once per phase: what its updates share
            repeat phase.repeats times: zero_grad, loss = phase.loss(b), backward, step
        every log_every:    one line in metrics.jsonl (the only host syncs, with the divergence check)
        every sample_every: sample and reconstruction grids
        every ckpt_every:   an atomic checkpoint, after the divergence check (never of non-finite weights)

The loop (:func:`_train`) is put together from parts with modules of their own:

- :class:`~agelab.training_state.TrainingState` (``training_state.py``): model, optimisers,
  RNG and the learning-rate factor as a checkpoint's state.pt; save, resume, roll back.
- :class:`~agelab.divergence_guard.DivergenceGuard` (``divergence_guard.py``): every loss is
  accumulated into an on-device "all finite" flag; at log and checkpoint steps the flag and
  the weights are checked, and a non-finite value rolls model, optimisers, RNG and step back
  to the newest good checkpoint with the learning rate halved (at most ``max_rollbacks`` times).
- :class:`~agelab.log_window.LogWindow` (``log_window.py``): the loss sums on the device
  between two log lines, their means, images per second.
- :class:`Iteration` (here): one iteration, every phase's updates, with no host sync, so that
  ``--cuda-graphs`` can capture it whole (:class:`~agelab.cuda_graph.GraphedIteration`).

The trainer knows nothing of AGE or of any model type: losses, passes and what is
detached live in the model (:mod:`agelab.models.age`), and it asks the model
(:class:`agelab.models.base.GenerativeModel`) for its batches, training state beside
the weights, grids and final outputs.

Multi-process runs (``torchrun``; :mod:`agelab.distributed`, docs/scaling.md): every
process runs this same loop on its slice of the global batch; gradients are averaged
after each backward, batch statistics are those of the global batch, and only rank 0
writes the run folder (the others learn its path, and on resume its config and
state, from rank 0).
"""

from __future__ import annotations

import contextlib
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from agelab import checkpoint as ckpt
from agelab.config import ConfigError, TrainConfig
from agelab.cpu import amp_problem, keep_freed_memory
from agelab.cuda_graph import GraphedIteration, set_capturable
from agelab.data import ImageData, load_dataset, to_float
from agelab.distributed import Shard, launch_from_env, local_batch_size, start, use_global_batch_norm
from agelab.divergence_guard import DivergenceGuard
from agelab.errors import first_line
from agelab.log_window import LogWindow
from agelab.models import model_class
from agelab.models.base import GenerativeModel, ModelConfig, Phase
from agelab.runs import MetricsLog, Run, create_run_dir, write_status
from agelab.training_state import TrainingError, TrainingState, load_train_state, state_scalars

__all__ = ["train", "build_model", "BatchOrder", "Iteration", "TrainingError", "check_resume_config", "load_train_state",
           "resolve_device", "write_grids", "finish_run", "RESUMABLE_CHANGES", "SEED_MAX", "MAX_THREADS"]

# Options that may differ when a run is resumed (they do not change the model or its training math).
RESUMABLE_CHANGES = ("iterations", "device", "threads", "no_download", "no_cache", "strict", "channels_last", "log_every", "sample_every", "ckpt_every", "keep_ckpts",
                     "max_rollbacks", "compile", "amp", "malloc_tuning", "cuda_graphs")
SEED_MAX = 2**32 - 1  # seeds of torch generators; BatchOrder multiplies it by ~1e6
MAX_THREADS = 1024


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name} requested but CUDA is not available")
    return torch.device(name)


def build_model(cfg: TrainConfig, channels: int) -> GenerativeModel:
    """A fresh model of type ``cfg.model`` for data of ``channels`` channels: its networks from the run's options
    (ModelConfig) and its training config from them by its class (``config_from``; AGE: the GameConfig)."""
    cls = model_class(cfg.model)  # agelab.models.MODEL_TYPES
    if cls.conditional and channels != 3:
        raise ConfigError(f"--model: {cfg.model} colorizes colour (RGB) images; this dataset has {channels} channel(s)")
    model_cfg = ModelConfig(latent_dim=cfg.latent_dim, channels=channels, image_size=cfg.image_size,
                            width=cfg.width, prior=cfg.prior, model=cfg.model, res_blocks=cfg.res_blocks, nets=cfg.nets)
    return cls(model_cfg, cls.config_from(cfg))


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

    A non-finite loss or weight rolls the run back to its newest good checkpoint
    with the learning rate halved, at most ``cfg.max_rollbacks`` times; then a
    :class:`TrainingError` names the iteration and the losses.

    Started by ``torchrun`` with WORLD_SIZE > 1, every process calls this and they
    train one model together (docs/scaling.md); every process returns the run folder.
    """
    launch = launch_from_env()
    if launch is not None and resume is None and cfg is not None:
        local_batch_size(cfg.batch_size, launch.world_size)  # a clear error before the processes connect
    shard = start()
    try:
        return _train(shard, cfg, resume, overrides, progress)
    finally:
        shard.close()


# ---------------------------------------------------------------------------
# set-up: the run folder, this process, the data, the model and its optimisers
# ---------------------------------------------------------------------------
def _read_run(run_dir: Path, overrides: dict) -> tuple[TrainConfig, Path, dict]:
    """The config of run ``run_dir`` (with ``overrides``), its newest good checkpoint and that one's state.pt."""
    if not (run_dir / "config.json").is_file():
        raise ckpt.CheckpointError(f"{run_dir}: not a run folder (no config.json)")
    cfg = check_resume_config(Run(run_dir).config(), overrides)
    ckpt_path = ckpt.latest_good_checkpoint(run_dir / "checkpoints")
    if ckpt_path is None:
        raise ckpt.CheckpointError(f"{run_dir}: no valid checkpoint to resume from")
    return cfg, ckpt_path, load_train_state(ckpt_path)


def _new_run_dir(cfg: TrainConfig) -> Path:
    """A new numbered run folder under ``cfg.out_dir``, with the run's config.json."""
    try:
        run_dir = create_run_dir(cfg.out_dir, cfg.dataset, cfg.tag)
    except OSError as exc:  # a file in the way, no permission, a full disk
        why = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        raise OSError(f"--out-dir: cannot create a run folder in {cfg.out_dir} ({why or exc})") from None
    (run_dir / "config.json").write_text(cfg.to_json())
    return run_dir


def _checked_config(cfg: TrainConfig, shard: Shard) -> TrainConfig:
    """``cfg`` validated, with the limits of this trainer and of the processes it runs in."""
    cfg = cfg.validate()
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"--seed: must be in 0..{SEED_MAX}, got {cfg.seed}")
    if cfg.threads > MAX_THREADS:  # torch crashes (SIGSEGV) on absurd thread counts
        raise ConfigError(f"--threads: must be <= {MAX_THREADS}, got {cfg.threads}")
    local_batch_size(cfg.batch_size, shard.world_size)  # --batch-size is the global batch: it must split evenly
    return cfg


def _set_up_process(cfg: TrainConfig, shard: Shard) -> torch.device:
    """The device of this process (``--device``, with GPU LOCAL_RANK for each process of a multi-process
    run), after checking what the options need of it; sets the thread count and the allocator."""
    device = resolve_device(cfg.device)
    if shard.distributed and device.type == "cuda":
        if cfg.device.startswith("cuda:"):
            raise ConfigError(f"--device: {cfg.device} cannot be shared by {shard.world_size} processes; use --device "
                              "cuda (each process takes GPU LOCAL_RANK)")
        if shard.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"--device: process LOCAL_RANK={shard.local_rank} has no GPU "
                              f"({torch.cuda.device_count()} visible); start at most that many processes per node")
        device = torch.device("cuda", shard.local_rank)
        torch.cuda.set_device(device)
    problem = amp_problem(cfg.amp, device.type)
    if problem:
        raise ConfigError(f"--amp: {problem}")
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs: CUDA graphs need a GPU; this run's device is {device}")
    if cfg.cuda_graphs and shard.distributed:
        raise ConfigError("--cuda-graphs: single-process runs only (the multi-process collectives run eagerly)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.malloc_tuning and device.type == "cpu":
        keep_freed_memory()
    return device


def _load_data(cfg: TrainConfig, shard: Shard, progress: bool) -> tuple[ImageData, ImageData]:
    """The train and test splits; rank 0 first (it may download), and its error stops every process."""
    with shard.writer_first():
        return tuple(load_dataset(cfg.dataset, split, cfg.image_size, cfg.data_root, not cfg.no_download, progress,
                                  cache=not cfg.no_cache, strict=cfg.strict) for split in ("train", "test"))


def _build_model(cfg: TrainConfig, channels: int, device: torch.device, shard: Shard) -> GenerativeModel:
    """The run's model on ``device``, in the layout and with the compilation and batch norm the run asks for."""
    try:
        model = build_model(cfg, channels).to(device)
        if cfg.channels_last:  # NHWC activations, the layout the convolution kernels prefer (docs/performance.md)
            model = model.to(memory_format=torch.channels_last)
    except (RuntimeError, MemoryError) as exc:  # e.g. --latent-dim 10**11: the allocator gives up
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        raise ConfigError(f"--width/--latent-dim: cannot build a model this large ({first_line(exc)})") from None
    if shard.distributed:  # global-batch divergences and batch norm (docs/scaling.md)
        model.shard = shard
        use_global_batch_norm(model, shard)
    if cfg.compile:  # in place: parameter names, state_dict keys and checkpoints stay as they are
        for phase in model.phases():  # AGE: encoder and generator
            phase.module.compile()
        model.compiled = True  # the compiled code runs through forward only
    return model


def _adam(phases: list[Phase], cfg: TrainConfig, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """One Adam per phase. On CPU the fused kernel (the whole update in one vectorised pass over each
    tensor, where foreach makes one pass per elementwise operation; docs/performance.md); on CUDA
    foreach, capturable for --cuda-graphs."""
    fused = device.type == "cpu"
    optimizers = {p.name: torch.optim.Adam(p.module.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                           foreach=None if fused else True, fused=fused or None)
                  for p in phases}
    set_capturable(optimizers.values(), cfg.cuda_graphs)
    return optimizers


class Iteration:
    """One iteration of the game on batch rows: every phase's updates, with no host sync.

    It runs eagerly or is captured into a CUDA graph and replayed (``--cuda-graphs``), so what
    it records goes in place into tensors that exist before it: the window's loss sums and
    the guard's finite flag.
    """

    def __init__(self, model: GenerativeModel, phases: list[Phase], optimizers: dict[str, torch.optim.Optimizer],
                 images: torch.Tensor, cfg: TrainConfig, shard: Shard, window: LogWindow, guard: DivergenceGuard):
        self.model, self.phases, self.optimizers, self.images = model, phases, optimizers, images  # images (N, C, S, S) uint8
        self.cfg, self.shard, self.window, self.guard = cfg, shard, window, guard
        self.params = {p.name: list(p.module.parameters()) for p in phases}

    def autocast(self):
        """What the losses run under: bf16 autocast for ``--amp bf16``, else nothing."""
        if self.cfg.amp != "bf16":
            return contextlib.nullcontext()
        # autocast's weight-cast cache must be off inside CUDA graph captures
        return torch.autocast(self.images.device.type, dtype=torch.bfloat16, cache_enabled=not self.cfg.cuda_graphs)

    def __call__(self, rows: torch.Tensor) -> None:
        # AGE: x (b, C, S, S) in [-1, 1]; colorization models: (ab, L) in Lab space
        batch = self.model.prepare_batch(self.images[rows], channels_last=self.cfg.channels_last)
        for phase in self.phases:
            for p in self.phases:  # only this phase's network gets weight gradients
                p.module.requires_grad_(p is phase)
            opt = self.optimizers[phase.name]
            phase_batch = batch if phase.begin is None else phase.begin(batch)
            for _ in range(phase.repeats):
                opt.zero_grad(set_to_none=True)
                with self.autocast():
                    loss, logs = phase.loss(phase_batch)
                loss.backward()
                self.shard.average_gradients(self.params[phase.name])
                opt.step()
                self.guard.add_loss(loss)
                self.window.add(phase.name, logs)
        self.guard.end_iteration()


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------
def _train(shard: Shard, cfg: TrainConfig | None, resume: str | os.PathLike | None, overrides: dict | None,
           progress: bool) -> Path:
    ckpt_path, saved = None, None  # a resumed run's checkpoint and its state.pt (the other processes: its scalars)
    if resume is not None:  # rank 0 reads the run folder; the others get its config and step
        run_dir = Path(resume)
        cfg, ckpt_path, saved = shard.on_writer(lambda: _read_run(run_dir, overrides or {}),
                                                share=lambda r: (*r[:2], state_scalars(r[2])))
    elif cfg is None:
        raise ValueError("train() needs a config or a run folder to resume")
    cfg = _checked_config(cfg, shard)
    device = _set_up_process(cfg, shard)
    train_data, test_data = _load_data(cfg, shard, progress)  # a missing dataset fails before any run folder exists
    order = BatchOrder(len(train_data), cfg.batch_size, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg, train_data.channels, device, shard)
    phases = model.phases()
    optimizers = _adam(phases, cfg, device)
    if saved is None:
        run_dir = shard.on_writer(lambda: _new_run_dir(cfg))  # one run folder, rank 0's; the others get its path
    state = TrainingState(model, optimizers, cfg, run_dir, shard, device)
    if saved is not None:
        state.resume(ckpt_path, saved)
    state.sync()  # every process: rank 0's weights, optimiser states and RNG stream
    start_step = 0 if saved is None else saved["step"]

    images = train_data.images.to(device)  # (N, C, S, S) uint8, resident on the device
    fixed_test = to_float(test_data.images[:32]).to(device)  # held-out images for the reconstruction grid
    window = LogWindow({p.name: p.repeats for p in phases})
    guard = DivergenceGuard(device, start_step)
    iteration = Iteration(model, phases, optimizers, images, cfg, shard, window, guard)
    graphed = GraphedIteration(iteration, device) if cfg.cuda_graphs else None

    step, stopped_by, log = start_step, None, None
    bar = tqdm(total=cfg.iterations, initial=start_step, disable=not (progress and shard.is_writer),
               desc=f"train {run_dir.name}", unit="it", dynamic_ncols=True)
    try:
        if shard.is_writer:
            write_status(run_dir, "running", step=start_step)
            ckpt.remove_stale_temporaries(state.ckpt_root)  # left by a process killed mid-save
            log = MetricsLog(run_dir)
            log.truncate_after(start_step)
        with _stop_on_signals() as flag:
            if saved is None:
                state.save(0)  # a rollback target from the start, and a resume point before the first checkpoint
            model.train()
            while step < cfg.iterations:
                lr = state.set_learning_rate(step)
                rows = shard.local_rows(order.indices(step)).to(device)
                if graphed is None:
                    iteration(rows)
                else:  # a new learning rate is a new graph (it is baked into the optimiser kernels)
                    graphed(rows, key=lr)
                window.count(len(rows) * shard.world_size)  # images of the global batch
                step += 1
                bar.update(1)

                signal_name = shard.any_signal(flag["stop"])  # every process stops at the same iteration
                stop = signal_name is not None and step < cfg.iterations
                due_log = step % cfg.log_every == 0 or step == cfg.iterations
                due_ckpt = step % cfg.ckpt_every == 0 or step == cfg.iterations or stop
                # always checked before a checkpoint; one decision for every process
                problem = shard.first_of(guard.trouble(model, step, window.means)) if due_log or due_ckpt else None
                if problem is not None:
                    detected, step = step, state.roll_back(problem)
                    if shard.is_writer:
                        log.truncate_after(step)
                        log.write(step, {"event": "rollback", "rollback": state.rollbacks, "lr_scale": state.lr_scale,
                                         "detected_at": detected, "reason": problem})
                        tqdm.write(f"agelab: {problem}; rolled back to iteration {step} with the learning rate "
                                   f"x{state.lr_scale:g} (rollback {state.rollbacks} of {cfg.max_rollbacks})")
                    window.reset()
                    guard.reset(step)
                    if graphed is not None:  # the restored optimiser state tensors are new: capture again
                        graphed.invalidate()
                    bar.n = step
                    bar.refresh()
                    if stop:  # the rolled-back state, with its halved learning rate, is what a resume continues
                        stopped_by = signal_name
                        state.save(step)
                        break
                    continue

                if due_log:
                    img_per_s = window.images_per_second()
                    mean = shard.mean_over_processes(window.means())  # local batch means -> global batch means
                    values = {k: mean[k].item() for k in sorted(mean)}
                    values.update(epoch=step / order.per_epoch, lr=lr, img_per_s=img_per_s)
                    if graphed is not None:
                        values["cuda_graph_captures"] = graphed.captures
                    if shard.is_writer:
                        log.write(step, values)
                    bar.set_postfix({**{p.name: f"{values.get(p.name + '/loss', 0):.3g}" for p in phases},
                                     "img/s": f"{img_per_s:.0f}"})
                    window.reset()
                if (step % cfg.sample_every == 0 or step == cfg.iterations) and shard.is_writer:
                    write_grids(model, run_dir / "grids", step, fixed_test)
                if due_ckpt:
                    state.save(step)
                if stop:
                    stopped_by = signal_name
                    break
        bar.close()
        if stopped_by is None:
            for p in phases:
                p.module.requires_grad_(True)
            if shard.is_writer:
                finish_run(model, run_dir, test_data, step, device)
    except BaseException as exc:
        bar.close()
        if log is not None:
            log.close()
        try:
            if shard.is_writer:
                write_status(run_dir, "failed", step=step, error=f"{type(exc).__name__}: {exc}")
        except OSError:  # e.g. the disk is full: the original error matters more
            pass
        raise
    if shard.is_writer:
        log.close()
        if stopped_by is not None:
            write_status(run_dir, "interrupted", step=step, signal=stopped_by)
            launcher = "torchrun ... -m agelab" if shard.distributed else "agelab"  # any number of processes may resume
            print(f"agelab: stopped by {stopped_by} at iteration {step}; checkpoint saved. "
                  f"Resume with: {launcher} train --resume {run_dir}")
        else:
            write_status(run_dir, "finished", step=step)
    shard.barrier()  # the other processes return once rank 0's outputs are complete
    return run_dir


def write_grids(model: GenerativeModel, folder: Path, step: int, fixed_test: torch.Tensor) -> None:
    """The periodic grids, the model's own (:meth:`GenerativeModel.write_grids`; colorizations for colorization models)."""
    model.write_grids(folder, step, fixed_test)


def finish_run(model: GenerativeModel, run_dir: Path, test_data: ImageData, step: int, device: torch.device) -> dict:
    """The final outputs, summary.json and report.html: the model's own (:meth:`GenerativeModel.finish_run`)."""
    return model.finish_run(run_dir, test_data, step, device)
