"""FID Inception throughput on this machine: the plain network against the folded copy features() runs.

    python benchmarks/inception_throughput.py --threads 1 --batch 50 --repeats 3 [--compile]

Builds :class:`agelab.metrics.features.FIDInceptionV3` with random weights and non-trivial batch-norm
statistics (the cost does not depend on the weights; no weights file is needed) and times, on the same
32x32 images resized to 299x299 as ``agelab eval --features inception`` does:

(a) plain: the network as written (conv, batch norm, ReLU; contiguous NCHW);
(b) folded: :meth:`FIDInceptionV3.folded` (each batch norm folded into its convolution, channels-last),
    which is what ``InceptionExtractor.features`` runs;
(c) with ``--compile``, also compiled: the folded copy through torch.compile with freezing, what
    ``agelab eval --compile-extractor`` runs (compiled before the timed repeats; the compile time is printed).

The variants alternate, so a changing background load hits both alike; medians and their ratio are
printed with the CPU model, and the largest relative difference between their features. At the folded
rate it also prints how long 10,000 images take (one CIFAR-10 sample set or test split).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--batch", type=int, default=50, help="images per forward pass (default: 50)")
    p.add_argument("--repeats", type=int, default=3, help="paired repeats (default: 3)")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd folded copy")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from agelab.cpu import describe_cpu
    from agelab.metrics.features import FIDInceptionV3, InceptionExtractor

    torch.manual_seed(0)
    net = FIDInceptionV3(with_logits=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ext = InceptionExtractor(net)
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)

    def plain(x):
        from agelab.metrics.features import _resize_tf, _to_255

        return net((_resize_tf(_to_255(x), 299) - 128.0) / 128.0)[0]

    def rate(fn) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        out = fn(images)
        return args.batch / (time.perf_counter() - start), out

    variants = {"plain": plain, "folded": ext.features}
    if args.compile:
        variants["compiled"] = InceptionExtractor(net, compile=True).features
    rates: dict[str, list[float]] = {k: [] for k in variants}
    outs: dict[str, torch.Tensor] = {}
    compile_s = None
    with torch.no_grad():
        plain(images[:2]), ext.features(images[:2])  # warm-up (first-call allocations, the folding itself)
        if args.compile:
            start = time.perf_counter()
            variants["compiled"](images)  # compiles for this batch size
            compile_s = time.perf_counter() - start
        for _ in range(args.repeats):
            for k, fn in variants.items():
                r, outs[k] = rate(fn)
                rates[k].append(r)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"{args.repeats} paired repeats")
    for k, v in rates.items():
        print(f"{k:>8}: {med[k]:6.2f} images/s (repeats: {', '.join(f'{x:.2f}' for x in v)})")
    for k in variants:
        if k != "plain":
            diff = float((outs[k] - outs["plain"]).norm() / outs["plain"].norm())
            print(f"{k} / plain: {med[k] / med['plain']:.2f}x; relative feature difference {diff:.1e}")
    if compile_s is not None:
        print(f"compiling took {compile_s:.0f} s (the first batch; inductor caches it on disk for later runs)")
    best = max(med, key=med.get)
    print(f"10,000 images at the {best} rate: {10000 / med[best] / 60:.0f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
