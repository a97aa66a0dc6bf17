"""Multi-process training (agelab.distributed) and the --compile / --amp options.

The two-process checks spawn 2 CPU processes with gloo once per session (about
10-20 s on 2 cores) and compare them with single-process runs of the same global
batch: gradients of one encoder and one generator phase (kl_gaussian and kl_knn),
and the weights, logs and run folder of a short ``train()`` and of its resume.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agelab import distributed as agedist
from agelab.config import ConfigError, TrainConfig
from agelab.data import load_dataset, to_float
from agelab.distributed import Shard, local_batch_size, use_global_batch_norm
from agelab.runs import read_metrics, read_status
from agelab.trainer import BatchOrder, build_model, train
from conftest import UPDATE_RTOL, assert_same_tensors, checkpoint_weights, invoke, relative_update_error, run_dirs, tiny_config

WORLD = 2
DIVERGENCES = ("gaussian", "knn")
SPAWN_TIMEOUT_S = 300  # a deadlock fails the test instead of hanging the suite


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _grad_config(out_dir: Path, divergence: str) -> TrainConfig:
    # latent 8 rather than 4: with 4 the nearest-neighbour distances of 8 codes are so small that float32
    # rounding (different summation order) moves kl_knn's gradient by up to ~2e-5 of its scale
    return tiny_config(out_dir, divergence=divergence, latent_dim=8, knn_k=2, adaptive_adversary=False)


def _train_config(out_dir: Path, **overrides) -> TrainConfig:
    return tiny_config(out_dir, **{**dict(iterations=4, log_every=1, ckpt_every=2, keep_ckpts=10, threads=1), **overrides})


def phase_gradients(cfg: TrainConfig, shard: Shard) -> dict[str, torch.Tensor]:
    """Encoder gradients of one encoder phase, then generator gradients of one generator step (no optimiser step
    in between), on the global batch of iteration 0; plus the encoder's batch-norm running statistics."""
    data = load_dataset(cfg.dataset, "train", cfg.image_size)
    order = BatchOrder(len(data), cfg.batch_size, cfg.seed)
    x = to_float(data.images[shard.local_rows(order.indices(0))]).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.channels).to(memory_format=torch.channels_last)
    if shard.distributed:
        model.shard = shard
        use_global_batch_norm(model, shard)
    model.train()
    out: dict[str, torch.Tensor] = {}
    phases = model.phases()
    for phase in phases:
        for p in phases:
            p.module.requires_grad_(p is phase)
        loss, _ = phase.loss(x)
        loss.backward()
        shard.average_gradients(list(phase.module.parameters()))
        out.update({f"{phase.name}.grad.{n}": p.grad.clone() for n, p in phase.module.named_parameters()})
    out.update({f"enc.buffer.{n}": b.clone() for n, b in model.encoder.named_buffers()})
    return out


def _worker(rank: int, ports: list[int], out_dir: str) -> None:
    """One of the WORLD processes: what torchrun would start, plus the gradient checks."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    runs = Path(out_dir) / "runs-2p"
    results: dict = {}
    run = train(_train_config(runs), progress=False)  # joins the group from the environment, leaves it at the end
    results["run"] = str(run)
    results["group_left"] = not dist.is_initialized()
    os.environ["MASTER_PORT"] = str(ports[1])
    results["resumed"] = str(train(resume=run, overrides={"iterations": 6}, progress=False))

    os.environ["MASTER_PORT"] = str(ports[2])
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    shard = agedist.start()  # the group initialised above
    for divergence in DIVERGENCES:
        results[f"grads-{divergence}"] = phase_gradients(_grad_config(runs, divergence), shard)
    dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Run ``_worker`` in 2 spawned processes once; (their folder, each rank's results)."""
    out = tmp_path_factory.mktemp("two-processes")
    ctx = mp.start_processes(_worker, args=(_free_ports(3), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} training processes did not finish within {SPAWN_TIMEOUT_S} s (deadlock?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ---------------------------------------------------------------------------
# two processes == one process with the same global batch
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_two_process_gradients_equal_one_process_of_the_global_batch(two_processes, tmp_path, divergence):
    """Equal to 1e-5 of each tensor's largest entry (the gradients reach ~100 with lam = 1000).

    The math is the same: in float64 (with the divergences' fp32 casts disabled) the two
    agree to ~1e-14. In float32 sums run in another order (4 + 4 rows instead of 8),
    which moves the gradients by a few 1e-6 of their scale.
    """
    _, results = two_processes
    expected = phase_gradients(_grad_config(tmp_path, divergence), Shard())
    assert any(k.startswith("enc.grad") for k in expected) and any(k.startswith("gen.grad") for k in expected)
    for rank_results in results:  # every replica holds the same averaged gradients
        got = rank_results[f"grads-{divergence}"]
        assert got.keys() == expected.keys()
        for k, want in expected.items():
            scale = max(1.0, want.abs().max().item())
            torch.testing.assert_close(got[k], want, rtol=0, atol=1e-5 * scale, msg=lambda m: f"{k}: {m}")


def test_two_process_training_equals_one_process_and_writes_one_run_folder(two_processes, tmp_path):
    out, results = two_processes
    run = Path(results[0]["run"])
    assert [Path(r["run"]) for r in results] == [run] * WORLD  # every process learnt rank 0's folder
    assert run_dirs(out / "runs-2p") == [run]  # one writer, one folder
    assert all(r["group_left"] for r in results)
    assert [Path(r["resumed"]) for r in results] == [run] * WORLD
    assert read_status(run)["state"] == "finished" and read_status(run)["step"] == 6

    # One process, same global batch: 6 iterations straight (resume is exact, so 4 + 2 must equal it).
    single = train(_train_config(tmp_path / "runs-1p", iterations=6), progress=False)
    assert not dist.is_initialized()  # a single-process run never joins a process group
    initial = checkpoint_weights(single, 0)
    for step in (4, 6):  # the 2-process run's checkpoint 4 (before the resume) and 6 (after); measured: 2e-8
        assert relative_update_error(checkpoint_weights(run, step), checkpoint_weights(single, step), initial) < UPDATE_RTOL

    two, one = read_metrics(run), read_metrics(single)
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 7))
    for a, b in zip(two, one):  # logged values are global-batch means
        for k in b:
            if k != "img_per_s":
                assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), (a["step"], k)
    assert (run / "samples.png").is_file() and (run / "report.html").is_file()


def test_batch_size_not_divisible_by_the_processes_is_a_clear_error(monkeypatch, tmp_path, capsys):
    assert local_batch_size(8, 2) == 4
    with pytest.raises(ConfigError, match=r"^--batch-size: 9 is not divisible by the number of processes \(2\)"):
        local_batch_size(9, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="--batch-size"):  # before any connection is attempted
        train(tiny_config(tmp_path / "runs", batch_size=9), progress=False)
    code, _, err = invoke(["train", "--dataset", "digits", "--batch-size", "9", "--out-dir", tmp_path / "runs",
                           "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not divisible by the number of processes" in err
    assert run_dirs(tmp_path / "runs") == [] and not dist.is_initialized()


def test_launch_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert agedist.launch_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert agedist.launch_from_env() is None  # torchrun --nproc_per_node 1: a plain run
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert agedist.launch_from_env() == agedist.Launch(world_size=4, rank=3, local_rank=3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert agedist.launch_from_env().local_rank == 1
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK"):
        agedist.launch_from_env()


def test_single_process_shard_is_the_identity():
    shard = Shard()
    x = torch.randn(6, 3)
    assert shard.local_rows(x) is x and shard.gather(x) is x and shard.sum(x) is x
    assert shard.on_writer(lambda: 5) == 5 and shard.first_of("a") == "a" and shard.any_signal(None) is None
    assert Shard(rank=1, world_size=3).rows(6) == slice(2, 4)


# ---------------------------------------------------------------------------
# --compile
# ---------------------------------------------------------------------------
def _compile_with(monkeypatch, backend: str) -> None:
    compile_module = torch.nn.Module.compile

    def compile_with_backend(self, *args, **kwargs):
        kwargs.setdefault("backend", backend)
        return compile_module(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_with_backend)


def test_compile_flag_trains_the_same_model(monkeypatch, tiny_cfg):
    """--compile traced by dynamo + AOTAutograd (the 'aot_eager' backend: no C++ codegen, seconds not minutes)."""
    eager = train(tiny_cfg(iterations=2, log_every=1), progress=False)
    _compile_with(monkeypatch, "aot_eager")
    compiled = train(tiny_cfg(iterations=2, log_every=1, compile=True), progress=False)
    assert read_status(compiled)["state"] == "finished"
    assert relative_update_error(checkpoint_weights(compiled), checkpoint_weights(eager),
                                 checkpoint_weights(eager, 0)) < UPDATE_RTOL
    assert set(checkpoint_weights(compiled)) == set(checkpoint_weights(eager))  # no _orig_mod. prefixes in checkpoints


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile's CPU backend "
                    "(inductor) needs a C/C++ compiler and none is installed")
def test_compile_flag_with_inductor(tiny_cfg):
    """The real default backend: about 90 s of compilation on 2 loaded cores, hence slow."""
    eager = train(tiny_cfg(iterations=2, log_every=1), progress=False)
    compiled = train(tiny_cfg(iterations=2, log_every=1, compile=True), progress=False)
    for a, b in zip(read_metrics(compiled), read_metrics(eager)):
        for k in ("enc/loss", "gen/loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4)
    assert relative_update_error(checkpoint_weights(compiled), checkpoint_weights(eager),
                                 checkpoint_weights(eager, 0)) < UPDATE_RTOL


# ---------------------------------------------------------------------------
# --amp
# ---------------------------------------------------------------------------
def test_amp_off_is_the_default_and_changes_nothing(tiny_cfg):
    assert TrainConfig().amp == "off" and TrainConfig().compile is False
    default = train(tiny_cfg(iterations=2), progress=False)
    explicit = train(tiny_cfg(iterations=2, amp="off"), progress=False)
    assert_same_tensors(checkpoint_weights(explicit), checkpoint_weights(default))


def test_divergence_wrapper_is_exact_in_fp32():
    """The fp32 cast and autocast guard around the divergence leave fp32 results bit-identical."""
    from agelab.divergences import kl_gaussian, kl_gaussian_reference, kl_knn
    from agelab.models.age import AGE, GameConfig, ModelConfig

    z = torch.nn.functional.normalize(torch.randn(16, 4), dim=1)
    for name, direct in (("gaussian", lambda m: kl_gaussian(z)), ("gaussian_reference", lambda m: kl_gaussian_reference(z)),
                         ("knn", lambda m: kl_knn(z, m.prior.sample(256), k=1, dim=m.prior.intrinsic_dim))):
        model = AGE(ModelConfig(latent_dim=4, channels=1, width=4), GameConfig(divergence=name, scale="sum"))
        torch.manual_seed(1)
        wrapped = model.divergence(z)
        torch.manual_seed(1)
        assert torch.equal(wrapped, direct(model)), name


def test_divergence_gets_fp32_codes_outside_autocast(monkeypatch):
    from agelab.models import age

    seen = []

    def spy(z, *args, **kwargs):
        seen.append((z.dtype, torch.is_autocast_enabled("cpu")))
        return age_kl(z, *args, **kwargs)

    age_kl = age.kl_gaussian_reference  # the default divergence
    monkeypatch.setattr(age, "kl_gaussian_reference", spy)
    torch.manual_seed(0)
    model = age.AGE(age.ModelConfig(latent_dim=4, channels=1, width=4))
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.encode(x).dtype == torch.bfloat16  # the codes themselves are bf16 under autocast
        loss, _ = model.encoder_loss(x)
    loss.backward()
    assert seen == [(torch.float32, False)] * 2  # D(e(x)) and D(e(g(z)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_amp_bf16_needs_a_gpu_or_native_cpu_bf16(tiny_cfg, monkeypatch):
    import agelab.cpu

    with pytest.raises(ConfigError, match="--amp"):
        TrainConfig(amp="fp8").validate()
    monkeypatch.setattr(agelab.cpu, "has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="^--amp: bf16 autocast needs a GPU or a CPU with native bfloat16"):
        tiny_cfg(amp="bf16")  # device="cpu"
    if not torch.cuda.is_available():  # --device auto resolves to the CPU: the trainer's check
        with pytest.raises(ConfigError, match="^--amp: bf16 autocast needs a GPU"):
            train(tiny_cfg().replace(device="auto", amp="bf16"), progress=False)


@pytest.mark.skipif(not __import__("agelab.cpu").cpu.has_native_bf16(), reason="this CPU has no native bfloat16")
def test_amp_bf16_on_a_cpu_with_native_bf16_trains_close_to_fp32(tiny_cfg):
    from agelab.runs import read_metrics

    runs = [train(tiny_cfg(amp=amp, iterations=4, log_every=4, tag=amp), progress=False) for amp in ("off", "bf16")]
    fp32, bf16 = (read_metrics(r)[-1] for r in runs)
    for key in ("enc/kl_real", "enc/kl_fake", "gen/kl_fake"):
        assert bf16[key] == pytest.approx(fp32[key], rel=0.05), key  # bf16 convolutions, fp32 statistics
