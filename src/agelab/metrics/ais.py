"""AIS log-likelihood of a decoder (Wu, Burda, Salakhutdinov, Grosse 2017), with a BDMC check.

The model density of a GAN-type decoder g, as in Wu et al.:

    p(x) = integral p(z) N(x; g(z), sigma^2 I) dz

with x on the grid the likelihood is reported for (for MNIST: the original 28x28 pixels in
[0, 1]; see :func:`mnist_observation`). sigma is chosen from a grid on validation images.

**The latent variable.** Annealing runs over u in R^M with prior N(0, I) and decodes
z = t(u): t(u) = u for the Gaussian prior, t(u) = u / |u| for the sphere prior. The
pushforward of N(0, I) under normalisation is the uniform distribution on the unit sphere,
so p(x) = E_{u ~ N(0, I)}[p(x | g(u / |u|))] exactly: the sphere prior, which has no density
in R^M, needs no Jacobian and no constrained sampler.

**AIS.** Intermediate distributions p_t(u) ~ N(u; 0, I) p(x | u)^beta_t, beta_0 = 0 < ... <
beta_T = 1 on a sigmoid (Grosse et al.'s ``sigmoid_schedule``, radius 4) or linear schedule;
log w = sum_t (beta_t - beta_{t-1}) log p(x | u_{t-1}), with u_{t-1} left by an HMC
transition that keeps p_{t-1} invariant (full momentum refresh, L leapfrog steps, Metropolis
correction). The step size is adapted per chain as in Wu et al.'s code: a running acceptance
rate (slowness 0.9) against a target of 0.65, times 1.02 above and 0.98 below, kept in
[1e-4, 0.5]. It starts at 0.5 (Wu et al.: 0.01), right for the near-prior distributions of the
first steps: with 1,000 rather than Wu et al.'s 10^4 or more distributions, growing at 2% per
step wastes a large part of the schedule (from 0.01: 5x the standard error on a linear-Gaussian
test at T = 400; from 0.1: 15 nats lower on a Fashion-MNIST AGE at T = 1,000). A step size
adapted on a chain's own past is what Wu et al. do; strictly it makes the kernels depend on the
chain's history (a possible bias, not detected in the linear-Gaussian test). Per image,
log p(x) ~ log mean_k w_k over K chains (a stochastic lower bound: E w = p(x)); its standard
error by the delta method, std(w) / (sqrt(K) mean(w)).

**BDMC** (Grosse et al. 2015): on simulated data x ~ p(x | u), u ~ p(u), the u that made x is
an exact posterior sample; AIS run backwards from it (beta from 1 to 0) estimates 1 / p(x)
unbiasedly, so -log mean_k w_k^rev is a stochastic upper bound. The gap upper - lower at the
same settings bounds the error of forward AIS on data like the model's own samples.

**Cost.** Every row (image x chain) of every job runs in one batch: one decoder forward and
backward (gradient with respect to the latent only) per leapfrog step, (T - 1) L + 1 per row.
The decoder's parameters must not require gradients (:func:`model_log_likelihood` switches
them off); the bookkeeping runs under ``no_grad`` (not ``inference_mode``: its tensors could
not enter the autograd graph of the next latent gradient) with no host synchronisation.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from agelab.cpu import keep_freed_memory

PROTOCOL = "Wu et al. 2017 AIS, Gaussian observation model on the 28x28 grid"
AIS_DATASETS = ("mnist", "fashion-mnist")
DEFAULT_SIGMA_GRID = (0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)

MeanFn = Callable[[Tensor], Tensor]  # z (B, M) -> observation means (B, D)


@dataclass(frozen=True)
class AISConfig:
    """Settings of one log-likelihood evaluation (the defaults are the eval's)."""

    images: int = 100  # test images
    chains: int = 16  # chains per image
    steps: int = 1000  # T: intermediate distributions (beta_0 = 0 ... beta_T = 1)
    leapfrog: int = 1  # leapfrog steps per HMC transition
    schedule: str = "sigmoid"  # or "linear"
    step_size: float = 0.5  # initial HMC step size (the top of the adaptation range; Wu et al. start at 0.01)
    target_accept: float = 0.65
    sigma: float | None = None  # None: chosen from sigma_grid on validation images
    sigma_grid: tuple[float, ...] = DEFAULT_SIGMA_GRID
    sigma_images: int = 10  # validation images from the TRAIN split
    sigma_chains: int = 4
    sigma_steps: int | None = None  # None: the same T as the test run
    bdmc_images: int = 10  # simulated images for the BDMC gap (0: none)
    seed: int = 0

    def validate(self) -> "AISConfig":
        for name in ("images", "chains", "steps", "leapfrog", "sigma_images", "sigma_chains"):
            if getattr(self, name) < 1:
                raise ValueError(f"AIS {name} must be at least 1, got {getattr(self, name)}")
        if self.bdmc_images < 0:
            raise ValueError(f"AIS bdmc_images must be >= 0, got {self.bdmc_images}")
        if self.schedule not in ("sigmoid", "linear"):
            raise ValueError(f"AIS schedule must be 'sigmoid' or 'linear', got {self.schedule!r}")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError(f"AIS sigma must be positive, got {self.sigma}")
        if not self.sigma_grid or min(self.sigma_grid) <= 0:
            raise ValueError("AIS sigma_grid must hold positive values")
        return self


# ---------------------------------------------------------------------------------------------------------
# schedule, prior map, estimators
# ---------------------------------------------------------------------------------------------------------
def beta_schedule(steps: int, kind: str = "sigmoid", radius: float = 4.0) -> Tensor:
    """beta_0 = 0, ..., beta_T = 1 (T + 1 values, float64): sigmoid (Grosse et al.) or linear."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if kind == "linear" or steps == 1:
        return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind != "sigmoid":
        raise ValueError(f"unknown schedule {kind!r}")
    s = torch.sigmoid(torch.linspace(-radius, radius, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def latent_map(prior: str) -> Callable[[Tensor], Tensor]:
    """u (B, M) ~ N(0, I) -> z: identity (gaussian) or u / |u| (sphere: exactly uniform on the sphere)."""
    if prior == "gaussian":
        return lambda u: u
    if prior == "sphere":
        return lambda u: u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    raise ValueError(f"unknown prior {prior!r}; AIS supports 'sphere' and 'gaussian'")


def log_mean_exp(logw: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of logw (N, K): log mean_k exp(logw) and its delta-method standard error (both (N,))."""
    k = logw.shape[1]
    top = logw.max(dim=1, keepdim=True).values
    w = (logw - top).exp()  # (N, K), max 1
    mean = w.mean(1)
    est = mean.log() + top.squeeze(1)
    if k > 1 and logw.shape[0] > 0:
        se = w.std(1, unbiased=True) / (math.sqrt(k) * mean)
    else:
        se = torch.full_like(est, float("nan"))
    return est, se


@dataclass
class AISResult:
    """Forward AIS estimates of log p(x) per image (nats), and the run's sampler statistics."""

    log_p: Tensor  # (N,)
    std_err: Tensor  # (N,) Monte Carlo standard error (delta method over chains)
    log_w: Tensor  # (N, K)
    accept_rate: float  # mean MH acceptance over all transitions and chains
    step_size: float  # median final step size over chains
    decoder_evals: int  # decoder forward+backward passes per row ((T - 1) L + 1)
    bdmc: "BDMCResult | None" = None


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on simulated images: lower (forward) and upper (reverse) bounds per image."""

    lower: Tensor  # (n,)
    upper: Tensor  # (n,)
    lower_err: Tensor = field(repr=False, default=None)  # (n,) delta-method standard errors of the two
    upper_err: Tensor = field(repr=False, default=None)
    x: Tensor = field(repr=False, default=None)  # (n, D) the simulated images

    @property
    def gap(self) -> Tensor:
        return self.upper - self.lower  # (n,)


# ---------------------------------------------------------------------------------------------------------
# the sampler
# ---------------------------------------------------------------------------------------------------------
class _Target:
    """log p(x_r | u_r) of each row r and its gradient in u, one decoder call for the whole batch."""

    def __init__(self, mean_fn: MeanFn, to_z, x_rows: Tensor, sigma_rows: Tensor):
        self.mean_fn, self.to_z, self.x = mean_fn, to_z, x_rows  # x: (B, D)
        d = x_rows.shape[1]
        self.half_inv_var = 0.5 / sigma_rows.square()  # (B,)
        self.const = -d * (sigma_rows.log() + 0.5 * math.log(2 * math.pi))  # (B,)

    def __call__(self, u: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            m = self.mean_fn(self.to_z(u)).flatten(1)  # (B, D)
            r = self.x - m
            ll = self.const - self.half_inv_var * r.square().sum(1)  # (B,)
            (grad,) = torch.autograd.grad(ll.sum(), u)
        return ll.detach(), grad  # (B,), (B, M)


@torch.no_grad()
def anneal(mean_fn: MeanFn, x_rows: Tensor, sigma_rows: Tensor, u0: Tensor, reverse: Tensor, *, steps: int,
           leapfrog: int = 1, schedule: str = "sigmoid", prior: str = "gaussian", step_size: float = 0.5,
           target_accept: float = 0.65, generator: torch.Generator | None = None, progress: bool = False,
           desc: str = "AIS") -> tuple[Tensor, dict]:
    """AIS over B independent rows at once; returns log w (B,) float64 and sampler statistics.

    Row r targets N(u; 0, I) N(x_r; mean_fn(t(u)), sigma_r^2 I)^beta, starting from u0[r]
    (a prior sample for forward rows; an exact posterior sample for ``reverse`` rows, which run
    beta from 1 to 0 and return the log weight of 1 / p(x)).
    """
    dev = u0.device
    b = u0.shape[0]
    target = _Target(mean_fn, latent_map(prior), x_rows, sigma_rows.to(x_rows))
    betas = beta_schedule(steps, schedule).to(device=dev, dtype=u0.dtype)  # (T + 1,)
    rev = reverse.to(dev).view(-1)

    def beta_at(t: int) -> Tensor:  # (B,) the row's beta at step t
        return torch.where(rev, betas[steps - t], betas[t])

    u = u0.clone()
    ll, gll = target(u)  # (B,), (B, M)
    eps = torch.full((b, 1), step_size, device=dev, dtype=u.dtype)
    avg_acc = torch.full((b, 1), target_accept, device=dev, dtype=u.dtype)
    accepted = torch.zeros((), device=dev, dtype=torch.float64)
    logw = torch.zeros(b, device=dev, dtype=torch.float64)
    beta_prev = beta_at(0)
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
    try:
        for t in range(1, steps + 1):
            beta = beta_at(t)
            logw += (beta - beta_prev).double() * ll.double()
            beta_prev = beta
            if t < steps:  # HMC transition keeping p_t invariant (none needed after the last weight)
                bt = beta.unsqueeze(1)  # (B, 1)
                p = torch.randn(u.shape, device=dev, dtype=u.dtype, generator=generator)
                h0 = 0.5 * u.square().sum(1) - beta * ll + 0.5 * p.square().sum(1)  # (B,)
                un, lln, glln = u, ll, gll
                p = p - 0.5 * eps * (un - bt * glln)
                for step in range(leapfrog):
                    un = un + eps * p
                    lln, glln = target(un)
                    grad_u = un - bt * glln
                    p = p - (eps if step < leapfrog - 1 else 0.5 * eps) * grad_u
                h1 = 0.5 * un.square().sum(1) - beta * lln + 0.5 * p.square().sum(1)
                log_unif = torch.rand(b, device=dev, dtype=u.dtype, generator=generator).log()
                acc = log_unif < (h0 - h1)  # (B,), NaN -> rejected
                a = acc.unsqueeze(1)
                u, ll, gll = torch.where(a, un, u), torch.where(acc, lln, ll), torch.where(a, glln, gll)
                accepted += acc.double().sum()
                avg_acc = 0.9 * avg_acc + 0.1 * a.to(u.dtype)
                eps = torch.where(avg_acc > target_accept, eps * 1.02, eps * 0.98).clamp(1e-4, 0.5)
            bar.update(1)
    finally:
        bar.close()
    transitions = max(steps - 1, 1) * b
    stats = {"accept_rate": float(accepted) / transitions if steps > 1 else float("nan"),
             "step_size": float(eps.median()), "decoder_evals": (steps - 1) * leapfrog + 1, "u": u}
    return logw, stats


def _as_rows(sigma: float | Tensor, n: int, device) -> Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float32, device=device)
    return s.expand(n).clone() if s.dim() == 0 else s.view(n).clone()


def simulate(mean_fn: MeanFn, n: int, latent_dim: int, sigma: float, prior: str = "gaussian",
             generator: torch.Generator | None = None, device="cpu") -> tuple[Tensor, Tensor]:
    """n images from the model: u ~ N(0, I), x = mean_fn(t(u)) + sigma * noise. Returns (x (n, D), u (n, M))."""
    u = torch.randn(n, latent_dim, device=device, generator=generator)
    with torch.no_grad():
        m = mean_fn(latent_map(prior)(u)).flatten(1)
    x = m + sigma * torch.randn(m.shape, device=device, generator=generator)
    return x, u


def ais_log_likelihood(mean_fn: MeanFn, x: Tensor, sigma: float | Tensor, latent_dim: int, *,
                       prior: str = "gaussian", chains: int = 16, steps: int = 1000, leapfrog: int = 1,
                       schedule: str = "sigmoid", step_size: float = 0.5, target_accept: float = 0.65,
                       bdmc_images: int = 0, seed: int = 0, progress: bool = True, desc: str = "AIS") -> AISResult:
    """log p(x) per row of x (N, D) by forward AIS with ``chains`` chains each; optionally BDMC at the same settings.

    ``sigma``: the observation noise, a number or one per image (N,). With ``bdmc_images`` = n > 0,
    n images are simulated from the model (with the first image's sigma) and annealed forwards and
    backwards in the same batch as x: ``result.bdmc`` holds their lower and upper bounds.
    """
    dev = x.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    n, k = x.shape[0], chains
    sig = _as_rows(sigma, n, dev)
    xs, sigs, u0s, revs = [x.flatten(1).repeat_interleave(k, 0)], [sig.repeat_interleave(k)], [], []
    u0s.append(torch.randn(n * k, latent_dim, device=dev, generator=gen))
    revs.append(torch.zeros(n * k, dtype=torch.bool, device=dev))
    x_sim = None
    if bdmc_images:
        s0 = float(sig[0]) if n else float(torch.as_tensor(sigma).flatten()[0])
        x_sim, u_sim = simulate(mean_fn, bdmc_images, latent_dim, s0, prior, gen, dev)
        rows = bdmc_images * k
        xs += [x_sim.repeat_interleave(k, 0)] * 2
        sigs += [torch.full((rows,), s0, device=dev)] * 2
        u0s += [torch.randn(rows, latent_dim, device=dev, generator=gen), u_sim.repeat_interleave(k, 0)]
        revs += [torch.zeros(rows, dtype=torch.bool, device=dev), torch.ones(rows, dtype=torch.bool, device=dev)]
    logw, stats = anneal(mean_fn, torch.cat(xs), torch.cat(sigs), torch.cat(u0s), torch.cat(revs), steps=steps,
                         leapfrog=leapfrog, schedule=schedule, prior=prior, step_size=step_size,
                         target_accept=target_accept, generator=gen, progress=progress, desc=desc)
    logw = logw.cpu()
    main = logw[: n * k].view(n, k)
    log_p, se = log_mean_exp(main)
    result = AISResult(log_p, se, main, stats["accept_rate"], stats["step_size"], stats["decoder_evals"])
    if bdmc_images:
        rows = bdmc_images * k
        fwd = logw[n * k : n * k + rows].view(bdmc_images, k)
        rev = logw[n * k + rows :].view(bdmc_images, k)
        (lower, lower_err), (neg_upper, upper_err) = log_mean_exp(fwd), log_mean_exp(rev)
        result.bdmc = BDMCResult(lower, -neg_upper, lower_err, upper_err, x=x_sim.cpu())
    return result


# ---------------------------------------------------------------------------------------------------------
# AGE models on MNIST-type data
# ---------------------------------------------------------------------------------------------------------
def grid_offset(image_size: int, original: int = 28) -> int:
    """Where the original 28x28 image sits in the training size: 2 for 32 (zero padding), else an error."""
    pad = image_size - original
    if not 0 <= pad <= 4:
        raise ValueError(f"the 28x28 grid is not recoverable at image size {image_size} (only sizes 28 to 32, "
                         f"which zero-pad MNIST, keep the original pixels)")
    return pad // 2


def mnist_observation(model, image_size: int | None = None, original: int = 28) -> MeanFn:
    """z (B, M) -> the decoder's mean on the original 28x28 grid, in [0, 1], flattened (B, 784).

    The 32x32 output is cropped to its central 28x28 ([2:30, 2:30], where the training data held
    the digit) and mapped from [-1, 1] to [0, 1]; the Gaussian observation model factorises over
    pixels, so the padding pixels integrate out and the density over the 784 pixels is exact.
    """
    size = image_size or model.cfg.image_size
    o = grid_offset(size, original)

    def mean(z: Tensor) -> Tensor:
        g = model.decode(z)  # (B, C, S, S) in [-1, 1]
        return (g[..., o : o + original, o : o + original].flatten(1) + 1) * 0.5

    return mean


def grid_images(images_u8: Tensor, image_size: int, original: int = 28) -> Tensor:
    """uint8 images (N, C, S, S) at the training size -> the original pixels in [0, 1], (N, C*28*28)."""
    o = grid_offset(image_size, original)
    return images_u8[..., o : o + original, o : o + original].flatten(1).float() / 255.0


@contextlib.contextmanager
def frozen_decoder(model, channels_last: bool = True):
    """Eval mode, no parameter gradients and (by default) channels-last weights for the duration; all restored.

    Channels-last weights make the decoder's activations channels-last (NHWC), the layout
    oneDNN's convolution kernels prefer; AIS spends nearly all its time in decoder passes
    (docs/performance.md, "AIS throughput").
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    model.eval().requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def choose_sigma(mean_fn: MeanFn, x_val: Tensor, latent_dim: int, cfg: AISConfig, prior: str,
                 progress: bool = True) -> tuple[float, dict[str, float]]:
    """The sigma of ``cfg.sigma_grid`` with the highest mean AIS log p on validation images x_val (n, D).

    All grid values run in one batch (grid x images x chains). Returns (sigma, {sigma: mean log p}).
    """
    grid = torch.tensor(cfg.sigma_grid, dtype=torch.float32)
    n = x_val.shape[0]
    x_rep = x_val.repeat(len(grid), 1)  # (G * n, D), grid-major
    sig = grid.repeat_interleave(n).to(x_val.device)
    res = ais_log_likelihood(mean_fn, x_rep, sig, latent_dim, prior=prior, chains=cfg.sigma_chains,
                             steps=cfg.sigma_steps or cfg.steps, leapfrog=cfg.leapfrog, schedule=cfg.schedule,
                             step_size=cfg.step_size, target_accept=cfg.target_accept, seed=cfg.seed + 1,
                             progress=progress, desc="AIS: choosing sigma")
    means = res.log_p.view(len(grid), n).mean(1)  # (G,)
    table = {f"{s:g}": float(m) for s, m in zip(cfg.sigma_grid, means)}
    return float(cfg.sigma_grid[int(means.argmax())]), table


def _summary(values: Tensor) -> dict:
    n = len(values)
    return {"value": float(values.mean()),
            "std_error": float(values.std() / math.sqrt(n)) if n > 1 else None, "n": n}


def model_log_likelihood(model, test_u8: Tensor, val_u8: Tensor, cfg: AISConfig, progress: bool = True) -> dict:
    """The log_likelihood section of eval.json for an AGE model and uint8 images at its training size.

    ``test_u8`` (N, C, S, S): the images whose log-likelihood is estimated (``cfg.images`` of them are
    drawn with ``cfg.seed``); ``val_u8``: images for choosing sigma (training split), never the test images.
    """
    cfg = cfg.validate()
    size, prior, m = model.cfg.image_size, model.cfg.prior, model.cfg.latent_dim
    o = grid_offset(size)
    dev = model.device
    gen = torch.Generator().manual_seed(cfg.seed)
    test_idx = torch.randperm(len(test_u8), generator=gen)[: cfg.images]
    val_idx = torch.randperm(len(val_u8), generator=gen)[: cfg.sigma_images]
    x = grid_images(test_u8[test_idx], size).to(dev)  # (N, 784)
    with frozen_decoder(model):
        mean_fn = mnist_observation(model, size)
        if cfg.sigma is None:
            x_val = grid_images(val_u8[val_idx], size).to(dev)
            sigma, table = choose_sigma(mean_fn, x_val, m, cfg, prior, progress)
            how = (f"best mean AIS log p of {len(x_val)} random training-split images (seed {cfg.seed}) over the "
                   f"grid, {cfg.sigma_chains} chains, {cfg.sigma_steps or cfg.steps} intermediate distributions")
            if sigma in (min(cfg.sigma_grid), max(cfg.sigma_grid)):
                how += "; the best value is at the edge of the grid"
            sigma_info = {"value": sigma, "chosen_by": how, "grid": table}
        else:
            sigma = cfg.sigma
            sigma_info = {"value": sigma, "chosen_by": "given (--ais-sigma)", "grid": None}
        res = ais_log_likelihood(mean_fn, x, sigma, m, prior=prior, chains=cfg.chains, steps=cfg.steps,
                                 leapfrog=cfg.leapfrog, schedule=cfg.schedule, step_size=cfg.step_size,
                                 target_accept=cfg.target_accept, bdmc_images=cfg.bdmc_images, seed=cfg.seed,
                                 progress=progress, desc="AIS")
    summary = _summary(res.log_p)
    section = {
        "protocol": PROTOCOL,
        "value": summary["value"],
        "std_error": summary["std_error"],
        "mc_std_error": float(res.std_err.square().sum().sqrt() / len(res.std_err)),
        "unit": "nats per image (continuous density of the 784 pixels in [0, 1]); higher is better",
        "how": ("mean over test images of log mean_k w_k (forward AIS, a stochastic lower bound per image); "
                "std_error over images, mc_std_error the AIS Monte Carlo part (delta method over chains)"),
        "sigma": sigma_info,
        "split": "test", "n_images": len(x), "image_seed": cfg.seed,
        "chains": cfg.chains, "intermediate_distributions": cfg.steps, "schedule": cfg.schedule,
        "leapfrog_steps": cfg.leapfrog,
        "hmc": {"initial_step_size": cfg.step_size, "target_accept": cfg.target_accept,
                "accept_rate": res.accept_rate, "median_final_step_size": res.step_size,
                "adaptation": "per chain, x1.02 / x0.98 on a running acceptance rate (Wu et al.)"},
        "latent": ("u ~ N(0, I) in R^M, z = u / |u| (exactly uniform on the sphere)" if prior == "sphere"
                   else "z = u ~ N(0, I)"),
        "observation": f"x = g(z)[..., {o}:{o + 28}, {o}:{o + 28}] mapped to [0, 1] "
                       "+ N(0, sigma^2) per pixel",
        "decoder_evals_per_chain": res.decoder_evals,
        "per_image": [round(float(v), 3) for v in res.log_p],
    }
    if res.bdmc is not None:
        gap = res.bdmc.gap
        section["bdmc"] = {"gap": float(gap.mean()), "gap_std_error": _summary(gap)["std_error"],
                           "lower": float(res.bdmc.lower.mean()), "upper": float(res.bdmc.upper.mean()),
                           "n_images": len(gap), "chains": cfg.chains, "intermediate_distributions": cfg.steps,
                           "leapfrog_steps": cfg.leapfrog, "sigma": sigma,
                           "how": "images simulated from the model (u ~ N(0, I), x ~ N(g(t(u)), sigma^2)); "
                                  "forward AIS lower bound, reverse AIS from the true u upper bound; gap = "
                                  "mean(upper - lower) in nats"}
    return section


def ais_section(model, dataset: str, image_size: int, test_u8: Tensor, train_u8: Tensor, cfg: AISConfig,
                progress: bool = True) -> tuple[dict | None, str | None]:
    """``agelab eval --ais``: (section, None) for MNIST-type runs, else (None, why it is skipped).

    ``test_u8``, ``train_u8``: the run's uint8 splits at its image size (sigma is chosen on training images).
    On CPU it also applies :func:`keep_freed_memory` (process-wide).
    """
    if dataset not in AIS_DATASETS:
        return None, (f"the AIS log-likelihood follows Wu et al.'s MNIST protocol (28x28 grid): only "
                      f"{', '.join(AIS_DATASETS)} runs, not {dataset}")
    try:
        grid_offset(image_size)
    except ValueError as exc:
        return None, str(exc)
    if model.cfg.prior not in ("sphere", "gaussian"):
        return None, f"prior {model.cfg.prior!r} is not supported by the AIS sampler"
    if model.device.type == "cpu":
        keep_freed_memory()
    return model_log_likelihood(model, test_u8, train_u8, cfg, progress), None


__all__ = ["AISConfig", "AISResult", "BDMCResult", "PROTOCOL", "ais_log_likelihood", "ais_section", "anneal",
           "beta_schedule", "choose_sigma", "frozen_decoder", "grid_images", "keep_freed_memory", "latent_map",
           "log_mean_exp", "mnist_observation", "model_log_likelihood", "simulate"]
