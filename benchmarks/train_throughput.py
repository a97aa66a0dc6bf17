"""Training throughput: a plain PyTorch AGE loop against `agelab train`'s real code path.

    python benchmarks/train_throughput.py --data-root ../shared/data [--preset cifar10-preset cifar mnist]
        [--steps 30] [--repeats 3]
        [--variants agelab agelab-compile] [--device cuda]

For each preset both variants train the same nets (agelab's DCGAN-type encoder and
generator) on the same decoded images, with the same batch, the same game (1 encoder
update + 2 generator updates per iteration; the paper's reconstruction assignment for
`cifar` and `mnist`, the swapped one of agelab's presets for `cifar10-preset`) and the same
number of timed iterations after a warm-up. Each measurement runs in a fresh
subprocess so that its peak memory (max RSS on CPU, max allocated on CUDA) is its own.
Prints images/s (median of repeats), the ratio agelab / plain (of the medians, and the median of
each repeat's ratio to the plain run just before it), peak memory, the
FLOPs of one plain iteration (torch's FlopCounterMode) and the fraction of the
machine's measured fp32 matmul throughput that each variant reaches.

The plain loop is deliberately straightforward: fp32, contiguous tensors, a
DataLoader over the decoded float images, every parameter requiring gradients in
every phase, `zero_grad()` on both nets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

PRESETS = {
    # the paper's 32x32 nets for CIFAR-10 (paper 3.1: M = 128, DCGAN width 64) and the paper's game
    "cifar": dict(dataset="cifar10", latent_dim=128, width=64, game="paper"),
    # agelab's mnist preset nets, the paper's game
    "mnist": dict(dataset="mnist", latent_dim=10, width=32, game="paper"),
    # `agelab train --preset cifar10` exactly: the same nets with the preset's (swapped) game
    "cifar10-preset": dict(dataset="cifar10", latent_dim=128, width=64, game="swapped"),
}
BATCH = 64
# agelab variants: TrainConfig overrides on top of agelab's defaults ("agelab" = the defaults).
VARIANTS = {
    "agelab": {},
    "agelab-nchw": {"channels_last": False},
    "agelab-no-malloc-tuning": {"malloc_tuning": False},
    "agelab-compile": {"compile": True},
    "agelab-bf16": {"amp": "bf16"},  # a GPU, or a CPU with native bfloat16 (agelab refuses emulated bf16)
    "agelab-bf16-compile": {"amp": "bf16", "compile": True},  # likewise
    "agelab-nchw-compile": {"channels_last": False, "compile": True},
    "agelab-graphs": {"cuda_graphs": True},  # GPU only
    "agelab-bf16-graphs": {"amp": "bf16", "cuda_graphs": True},  # GPU only
}


def _peak_memory_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def plain_loop(preset: str, data_root: str, warmup: int, steps: int, device_name: str, flops: bool) -> dict:
    """A straightforward AGE loop (paper eq. 5-6) over a DataLoader; returns images/s of the timed steps."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from agelab.data import load_dataset, to_float
    from agelab.divergences import kl_gaussian
    from agelab.nets.dcgan import DCGANEncoder, DCGANGenerator

    p = PRESETS[preset]
    device = torch.device(device_name)
    data = load_dataset(p["dataset"], "train", 32, data_root)
    x_all = to_float(data.images)  # (N, C, 32, 32) float, decoded once
    loader = DataLoader(TensorDataset(x_all), batch_size=BATCH, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    enc_net = DCGANEncoder(p["latent_dim"], data.channels, 32, p["width"]).to(device)
    gen_net = DCGANGenerator(p["latent_dim"], data.channels, 32, p["width"]).to(device)
    opt_e = torch.optim.Adam(enc_net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=2e-4, betas=(0.5, 0.999))

    # The conventional forward passes through the layer stacks: the nets as built (agelab's models switch
    # them to the fast forms of agelab.ops, the same math).
    gen = gen_net

    def encode(x):
        h = enc_net(x)
        return h / h.norm(dim=1, keepdim=True)

    def prior(n):
        u = torch.randn(n, p["latent_dim"], device=device)
        return u / u.norm(dim=1, keepdim=True)

    def iteration_swapped(x):
        # encoder: D(e(x)) - D(e(g(z))) + 500 * ||z - e(g(z))||^2
        opt_e.zero_grad()
        opt_g.zero_grad()
        z = prior(x.shape[0])
        z_fake = encode(gen(z).detach())
        loss_e = kl_gaussian(encode(x)) - kl_gaussian(z_fake) + 500 * (z - z_fake).pow(2).sum(1).mean()
        loss_e.backward()
        opt_e.step()
        # generator, twice: D(e(g(z))) + 10 * L1(x, g(e(x)))
        for _ in range(2):
            opt_e.zero_grad()
            opt_g.zero_grad()
            z_rec = encode(gen(prior(x.shape[0])))
            loss_g = kl_gaussian(z_rec) + 10 * F.l1_loss(gen(encode(x)), x)
            loss_g.backward()
            opt_g.step()
        return loss_e.item() + loss_g.item()

    def iteration_paper(x):
        # encoder: D(e(x)) - D(e(g(z))) + 10 * L1(x, g(e(x)))
        opt_e.zero_grad()
        opt_g.zero_grad()
        z_real = encode(x)
        fake = gen(prior(x.shape[0])).detach()
        loss_e = kl_gaussian(z_real) - kl_gaussian(encode(fake)) + 10 * F.l1_loss(gen(z_real), x)
        loss_e.backward()
        opt_e.step()
        # generator, twice: D(e(g(z))) + 500 * ||z - e(g(z))||^2
        for _ in range(2):
            opt_e.zero_grad()
            opt_g.zero_grad()
            z = prior(x.shape[0])
            z_rec = encode(gen(z))
            loss_g = kl_gaussian(z_rec) + 500 * (z - z_rec).pow(2).sum(1).mean()
            loss_g.backward()
            opt_g.step()
        return loss_e.item() + loss_g.item()

    iteration = iteration_swapped if p["game"] == "swapped" else iteration_paper
    result = {}
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)[0].to(device)
        except StopIteration:
            batches = iter(loader)
            return next(batches)[0].to(device)

    if flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            iteration(next_batch())
        result["flops_per_iteration"] = counter.get_total_flops()
    for _ in range(warmup):
        iteration(next_batch())
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        iteration(next_batch())
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    result.update(images_per_s=steps * BATCH / dt, peak_mb=_peak_memory_mb(device))
    return result


def agelab_path(preset: str, data_root: str, warmup: int, steps: int, device_name: str, variant: str = "agelab") -> dict:
    """`agelab train` itself: images/s over its metrics windows after the first `warmup` iterations."""
    import tempfile

    import torch

    from agelab.config import build_config
    from agelab.runs import read_metrics
    from agelab.trainer import train

    p = PRESETS[preset]
    layout = os.environ.get("AGELAB_BENCH_CHANNELS_LAST")  # "0"/"1" overrides agelab's default layout
    extra = {} if layout is None else {"channels_last": layout == "1"}
    extra.update(VARIANTS[variant])
    if p["game"] == "swapped":
        from agelab.config import SWAPPED

        extra.update(SWAPPED)
    window = math.gcd(warmup, steps)  # metrics windows that split warm-up and timed iterations exactly
    with tempfile.TemporaryDirectory() as out:
        cfg = build_config(None, dataset=p["dataset"], data_root=data_root, latent_dim=p["latent_dim"],
                           width=p["width"], batch_size=BATCH, iterations=warmup + steps, log_every=window,
                           sample_every=10**9, ckpt_every=10**9, out_dir=out, device=device_name, **extra)
        run = train(cfg, progress=False)
        records = [r for r in read_metrics(run) if "img_per_s" in r and r["step"] > warmup]
    # the windows' time added up: images/s over all `steps` timed iterations, like the plain loop's
    seconds = sum(window * BATCH / r["img_per_s"] for r in records)
    device = torch.device(device_name)
    return {"images_per_s": len(records) * window * BATCH / seconds, "peak_mb": _peak_memory_mb(device)}


def matmul_gflops(device_name: str, n: int = 2048, reps: int = 10) -> float:
    import torch

    device = torch.device(device_name)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _child(args) -> None:
    if args.variant == "plain":
        out = plain_loop(args.child_preset, args.data_root, args.warmup, args.steps, args.device, args.flops)
    elif args.variant in VARIANTS:
        out = agelab_path(args.child_preset, args.data_root, args.warmup, args.steps, args.device, args.variant)
    else:
        out = {"gflops": matmul_gflops(args.device)}
    print("RESULT " + json.dumps(out))


def _run_child(variant: str, preset: str, args, flops: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--child-preset", preset, "--data-root", args.data_root,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--device", args.device]
    if flops:
        cmd.append("--flops")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{variant}/{preset} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--data-root", default=os.environ.get("AGELAB_DATA", "../shared/data"))
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    ap.add_argument("--steps", type=int, default=20, help="timed iterations")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per variant (median reported)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--variants", nargs="+", default=["agelab"], choices=list(VARIANTS),
                    help="agelab configurations to time against the plain loop (graphs ones need a GPU; bf16 ones a GPU "
                         "or a CPU with native bfloat16)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--child", dest="variant", help=argparse.SUPPRESS)
    ap.add_argument("--child-preset", help=argparse.SUPPRESS)
    ap.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        _child(args)
        return

    import torch

    peak = _run_child("matmul", "mnist", args)["gflops"]
    from agelab.cpu import cpu_description, describe_cpu

    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cpu": cpu_description(),
              "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device": args.device, "matmul_gflops": peak, "batch": BATCH, "steps": args.steps, "presets": {}}
    print(f"CPU: {describe_cpu()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"fp32 matmul: {peak:.1f} GFLOP/s on {args.device}")
    for preset in args.preset:
        flops = _run_child("plain", preset, args, flops=True).get("flops_per_iteration")
        variants = ["plain", *args.variants]
        runs = {v: [] for v in variants}
        for i in range(args.repeats):  # interleaved (plain, agelab, ..., plain, agelab, ...): a machine whose
            for v in variants:         # speed drifts (shared host, thermals) biases no variant
                runs[v].append(_run_child(v, preset, args))
                print(f"  [{preset}] {v} repeat {i + 1}/{args.repeats}: "
                      f"{runs[v][-1]['images_per_s']:.1f} img/s", flush=True)
        med = {v: statistics.median(r["images_per_s"] for r in runs[v]) for v in runs}
        mem = {v: max(r["peak_mb"] for r in runs[v]) for v in runs}
        achieved = {v: flops * med[v] / BATCH / 1e9 for v in runs}
        # each repeat's ratio to the plain measurement next to it: less exposed to a host whose speed drifts
        paired = {v: [a["images_per_s"] / p["images_per_s"] for a, p in zip(runs[v], runs["plain"])] for v in args.variants}
        report["presets"][preset] = {"flops_per_iteration": flops, "images_per_s": med, "peak_mb": mem,
                                     "ratio": {v: med[v] / med["plain"] for v in args.variants},
                                     "paired_ratio": {v: statistics.median(r) for v, r in paired.items()},
                                     "achieved_gflops": achieved, "all": runs}
        print(f"\n{preset} ({PRESETS[preset]['game']} game): {flops / 1e9:.1f} GFLOP per iteration "
              f"(1 encoder + 2 generator updates, batch {BATCH})")
        for v in variants:
            ratio = "" if v == "plain" else (f"  ratio {med[v] / med['plain']:.2f}x (paired: median "
                                             f"{statistics.median(paired[v]):.2f}x, {min(paired[v]):.2f}-{max(paired[v]):.2f})")
            print(f"  {v:20s} {med[v]:9.1f} img/s  peak {mem[v]:7.0f} MB  {achieved[v]:8.1f} GFLOP/s "
                  f"({achieved[v] / peak:.0%} of matmul){ratio}")
        print(f"  (median of {args.repeats} repeats; ratio = variant / plain; paired = each repeat's ratio to the "
              f"plain run just before it)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
