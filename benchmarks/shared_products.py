"""Paired A/B of agelab's fast layer forms in the training step: a phase's two passes through a net sharing
the net's code-end matrix product (``agelab.ops.stacked``, docs/architecture.md) against separate passes,
and both against the nets' layers as written.

    python benchmarks/shared_products.py --data-root ../shared/data --iterations 40

The variants are the cifar10 preset's model (`agelab train --preset cifar10`: 3x32x32, M = 128,
width 64, the swapped game, batch 64) with agelab's CPU setup (channels-last, fused Adam, malloc
tuning), built from the same seed: "plain layers" (``model.use_fast_ops(False)``: every net runs its
layers as written), "separate passes" (the fast forms, ``model.stacks_passes = False``) and
"shared end products" (the default). They train in one process on the same batches, alternating
iterations (A, B, C, then C, B, A, ...), so that the host's drifting speed hits them alike. The
whole-iteration effect of a few percent is below the spread between separate benchmark runs
(docs/performance.md); in one process it can be measured. Prints the median milliseconds per
iteration of each variant and its ratio to separate passes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("AGELAB_DATA", "../shared/data"))
    ap.add_argument("--iterations", type=int, default=40, help="timed iterations per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations per variant first")
    args = ap.parse_args()

    import torch

    from agelab.config import SWAPPED, build_config
    from agelab.cpu import keep_freed_memory
    from agelab.data import load_dataset
    from agelab.trainer import build_model

    keep_freed_memory()
    cfg = build_config(None, dataset="cifar10", latent_dim=128, width=64, batch_size=64, **SWAPPED)
    images = load_dataset("cifar10", "train", 32, args.data_root).images

    def variant(fast: bool, stacked: bool):
        torch.manual_seed(0)
        model = build_model(cfg, 3).to(memory_format=torch.channels_last).use_fast_ops(fast)
        model.stacks_passes = stacked
        model.train()
        phases = model.phases()
        opts = {p.name: torch.optim.Adam(p.module.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
                for p in phases}

        def iteration(rows: torch.Tensor) -> None:  # the trainer's loop body, without its logging
            batch = model.prepare_batch(images[rows], channels_last=True)
            for phase in phases:
                for p in phases:
                    p.module.requires_grad_(p is phase)
                phase_batch = batch if phase.begin is None else phase.begin(batch)
                for _ in range(phase.repeats):
                    opts[phase.name].zero_grad(set_to_none=True)
                    loss, _ = phase.loss(phase_batch)
                    loss.backward()
                    opts[phase.name].step()

        return iteration

    variants = {"plain layers": variant(False, False), "separate passes": variant(True, False),
                "shared end products": variant(True, True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    g = torch.Generator().manual_seed(1)
    for i in range(args.warmup + args.iterations):
        rows = torch.randperm(len(images), generator=g)[:64]
        order = list(variants) if i % 2 == 0 else list(variants)[::-1]
        for name in order:
            t = time.perf_counter()
            variants[name](rows)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["separate passes"])
    from agelab.cpu import describe_cpu

    print(f"CPU: {describe_cpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:20s} {m * 1e3:7.1f} ms per iteration ({64 / m:6.1f} img/s), {base / m:.3f}x separate passes")


if __name__ == "__main__":
    main()
