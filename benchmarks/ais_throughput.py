"""AIS throughput: decoder evaluations per second inside the AIS sampler against the bare decoder.

    python benchmarks/ais_throughput.py --steps 6 --repeats 2

Builds the ``mnist`` preset's generator (DCGAN-type, latent 10, width 32, 32x32 output; untrained:
the cost of a forward and backward pass does not depend on the weights) and measures, at batch
B = images x chains (default 100 x 16 = 1,600):

(a) raw: the decoder's forward + backward with respect to its input only (parameters frozen),
    ``torch.autograd.grad(g(z).sum(), z)``, evaluations (images) per second;
(b) AIS: :func:`agelab.metrics.ais.anneal` on the same batch (sphere prior, the 28x28 Gaussian
    observation model of the eval), counting (T - 1) L + 1 decoder passes per row;

and prints both, their ratio, and the time that ``images x chains x 1,000`` intermediate
distributions would take at the measured AIS rate for L = 1, 2, 3 (an extrapolation from a
few steps), alone and with the eval's extra rows (sigma selection and BDMC). Raw and AIS
measurements alternate, so a changing background load hits both alike; medians are reported.
Both use the setup of ``agelab eval --ais``: :func:`agelab.metrics.ais.frozen_decoder` (eval mode,
frozen parameters, channels-last) and :func:`agelab.metrics.ais.keep_freed_memory` (glibc malloc
thresholds); ``--contiguous`` and ``--no-malloc-tuning`` measure without them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch


def build_generator(preset: str):
    from agelab.config import build_config
    from agelab.trainer import build_model

    cfg = build_config(preset)
    return build_model(cfg, channels=1), cfg


def raw_rate(model, batch: int, evals: int, latent: int) -> float:
    """Decoder forward+backward (input gradient only) evaluations per second."""
    u = torch.randn(batch, latent)
    start = time.perf_counter()
    for _ in range(evals):
        z = u.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.decode(z).sum(), z)
    g.sum().item()  # one sync at the end (a no-op on CPU)
    return batch * evals / (time.perf_counter() - start)


def ais_rate(model, batch: int, steps: int, leapfrog: int, latent: int, prior: str) -> float:
    """Decoder evaluations per second inside ``anneal`` (all work of the sampler included)."""
    from agelab.metrics.ais import anneal, mnist_observation

    gen = torch.Generator().manual_seed(0)
    mean_fn = mnist_observation(model)
    x = torch.rand(batch, 784, generator=gen)
    sigma = torch.full((batch,), 0.05)
    u0 = torch.randn(batch, latent, generator=gen)
    reverse = torch.zeros(batch, dtype=torch.bool)
    start = time.perf_counter()
    logw, stats = anneal(mean_fn, x, sigma, u0, reverse, steps=steps, leapfrog=leapfrog, prior=prior, generator=gen)
    logw.sum().item()
    return batch * stats["decoder_evals"] / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--steps", type=int, default=6, help="intermediate distributions T of the timed AIS run "
                   "((T - 1) L + 1 decoder passes; default 6)")
    p.add_argument("--leapfrog", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--contiguous", action="store_true", help="NCHW weights and activations instead of the "
                   "channels-last layout that agelab's AIS uses (both measurements)")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's malloc thresholds alone "
                   "(agelab eval --ais sets them: agelab.metrics.ais.keep_freed_memory)")
    p.add_argument("--full-steps", type=int, default=1000, help="T of the extrapolated run (default 1000)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from agelab.metrics.ais import frozen_decoder, keep_freed_memory

    malloc = False if args.no_malloc_tuning else keep_freed_memory()
    model, cfg = build_generator(args.preset)
    frozen = frozen_decoder(model, channels_last=not args.contiguous)  # the AIS path's own setup, for both
    frozen.__enter__()
    batch = args.images * args.chains
    evals = (args.steps - 1) * args.leapfrog + 1
    print(f"preset {args.preset}: generator latent {cfg.latent_dim}, width {cfg.width}, {cfg.image_size}x"
          f"{cfg.image_size}, prior {cfg.prior}; batch {args.images} x {args.chains} = {batch}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, channels-last {not args.contiguous}, "
          f"malloc tuning {malloc}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    from agelab.cpu import describe_cpu

    print(f"CPU: {describe_cpu()}; load average before: {load}, cores {os.cpu_count()}")
    raw_rate(model, batch, 1, cfg.latent_dim)  # warm-up
    raws, aiss = [], []
    for r in range(args.repeats):
        raws.append(raw_rate(model, batch, evals, cfg.latent_dim))
        aiss.append(ais_rate(model, batch, args.steps, args.leapfrog, cfg.latent_dim, cfg.prior))
        print(f"  repeat {r + 1}: raw {raws[-1]:.0f} evals/s, AIS {aiss[-1]:.0f} evals/s "
              f"({evals} decoder passes of {batch} rows each)")
    raw, ais = statistics.median(raws), statistics.median(aiss)
    print(f"raw decoder fwd+bwd (input grad only): {raw:.0f} evals/s   ({batch / raw * 1000:.0f} ms per pass)")
    print(f"AIS sampler:                           {ais:.0f} evals/s   ({batch / ais * 1000:.0f} ms per pass)")
    print(f"ratio AIS / raw: {ais / raw:.1%}")
    print(f"load average after: {os.getloadavg() if hasattr(os, 'getloadavg') else None}")
    t = args.full_steps
    extra = (8 * 10 * 4 + 2 * 10 * args.chains) / batch  # eval defaults: sigma grid 8 x 10 images x 4 chains; BDMC
    print(f"extrapolated {args.images} images x {args.chains} chains x {t} intermediate distributions "
          f"at {ais:.0f} evals/s:")
    for lf in (1, 2, 3):
        sec = batch * ((t - 1) * lf + 1) / ais
        print(f"  L = {lf}: {sec / 60:5.1f} min for the test images; {sec * (1 + extra) / 60:5.1f} min with the "
              f"eval's sigma selection and BDMC (+{extra:.0%} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
