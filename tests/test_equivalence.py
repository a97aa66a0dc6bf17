"""`agelab train`'s fast path against a straightforward AGE loop: the same math to float tolerance.

`agelab train` on CPU runs channels-last activations and weights, the end layers as matrix
products, the image-end layers as a product and an overlap-add, shared end-layer products,
codes of e(x) computed once per batch, weight gradients only for the phase's net, and fused
Adam. The reference below does none of that: contiguous tensors, the nets' layer stacks called
as written, every parameter requiring gradients, the divergence written out from its formula.

Why the tolerances hold on any x86-64 CPU. Different kernels sum in different orders, so the
two paths differ by float rounding, about 1e-7 relative in one gradient. The adversarial game
and Adam amplify that over iterations: Adam divides each gradient element by its own running
magnitude, so an element whose gradient is near zero flips its step on rounding noise, and
the game carries such flips on. After 6 iterations the weights of two equally correct paths
parted by 1.2e-7 on an AMD EPYC and by 2.5e-5 on an Intel Xeon. Two checks avoid that
amplification instead of widening a weight tolerance until it catches nothing:

- the gradients of every phase (both generator updates included) on the same weights, inputs
  and latent draws, per tensor relative to the tensor's gradient norm: tolerance 1e-4, rounding
  gives 2-3e-6 (AMD EPYC, 2026-12-01). No iteration and no Adam in between: this is where a
  wrong loss weight, pass or missing gradient shows. A 1% change of any one weight of either
  game moves it by 5e-3 to 1.4e-2 (`test_the_gradient_check_catches_a_wrong_loss_weight`). At
  initialisation the image terms carry under 1% of their phase's gradient, so each game is
  also checked with its image term weighted 100x;
- the weights after 3 iterations of `agelab.trainer.train` (the optimiser, its moments'
  layout, the shared codes across generator updates, the data order and the latent draws),
  as the norm of the weight difference relative to the norm of the training update:
  tolerance 5e-3, rounding gives 2-3e-6, a reference one batch ahead 0.1-0.4
  (`test_the_weight_check_catches_a_wrong_batch_order`). A norm, unlike a maximum, is not
  decided by one element whose step flipped; and Adam, which normalises each step, hides
  loss weights from the weights, which is why they are checked on the gradients.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from agelab.config import PAPER, SWAPPED
from agelab.data import load_dataset, to_float
from agelab.runs import read_metrics
from agelab.trainer import BatchOrder, build_model, train
from conftest import UPDATE_RTOL, checkpoint_weights, relative_update_error, tiny_config

ITERATIONS = 3
GRAD_RTOL = 1e-4  # per-tensor gradient difference / gradient norm
GAMES = {"paper": PAPER, "swapped": SWAPPED,
         # the image terms, whose gradient is a small part of their phase's at initialisation, weighted 100x
         "paper, image term x100": {**PAPER, "mu": 1000.0},
         "swapped, image term x100": {**SWAPPED, "gen_image_recon": 1000.0},
         # the default: the adaptive adversary weight (it changes the encoder loss from the second iteration on; a
         # threshold of 1.0 so that the schedule's drop happens within the few iterations compared)
         "paper-adaptive (default)": {"adaptive_threshold": 1.0}}


def config(tmp_path, game, **overrides):
    return tiny_config(tmp_path, width=8, latent_dim=8, batch_size=16, iterations=ITERATIONS, log_every=1,
                       ckpt_every=ITERATIONS, **{**GAMES[game], **overrides})


def divergence(cfg, z):
    """The divergence of the batch of codes z (B, M) to the prior, written out from its formula."""
    m, v = z.mean(0), z.var(0, unbiased=False)
    if cfg.divergence == "gaussian":  # paper eq. 7: sum_j (s_j^2 + m_j^2)/2 - log s_j - 1/2 (per coordinate: / M)
        d = (0.5 * (v + m.pow(2)) - 0.5 * torch.log(v + 1e-8) - 0.5).sum()
        return d / z.shape[1] if cfg.game_scale == "mean" else d
    if cfg.divergence == "gaussian_reference":  # the authors' code: v_j where s_j belongs, averaged over j
        return (0.5 * (v.pow(2) + m.pow(2)) - torch.log(v + 1e-8) - 0.5).mean()
    raise NotImplementedError(cfg.divergence)


def latent_match(cfg, z, z_rec, weight):
    """weight * (1 - cos(z, z_rec)), averaged over the batch; per coordinate (/ M) on the authors' scale."""
    per = z.shape[1] if cfg.game_scale == "mean" else 1
    return weight * (1 - F.cosine_similarity(z, z_rec, dim=1)).mean() / per


class Reference:
    """The AGE game written out on contiguous copies of the trainer's initial nets."""

    def __init__(self, cfg, model, scale=None):
        self.cfg, self.scale = cfg, scale or {}
        self.adversary = cfg.adversary_weight  # the encoder's weight on D(e(g(z))), changed by the adaptive schedule
        self.enc, self.gen = copy.deepcopy(model.encoder), copy.deepcopy(model.generator)
        self.enc.to(memory_format=torch.contiguous_format), self.gen.to(memory_format=torch.contiguous_format)
        self.enc.train(), self.gen.train()

    def w(self, name):  # the game's weight of a term ("kl": the divergences'), optionally scaled: a wrong game
        return (1.0 if name == "kl" else getattr(self.cfg, name)) * self.scale.get(name, 1.0)

    def g(self, z):  # the layer stack as written: a 4x4 transposed convolution of the 1x1 code first
        return self.gen.net(z.view(len(z), -1, 1, 1))

    def e(self, x):  # onto the unit sphere
        h = self.enc.head(self.enc.features(x)).flatten(1)
        return h / h.norm(dim=1, keepdim=True)

    def prior(self, n):
        u = torch.randn(n, self.cfg.latent_dim)
        return u / u.norm(dim=1, keepdim=True)

    def encoder_loss(self, x):  # eq. 6 as a minimisation
        z = self.prior(len(x))
        x_fake = self.g(z).detach()
        z_real, z_fake = self.e(x), self.e(x_fake)
        kl_real, kl_fake = divergence(self.cfg, z_real), divergence(self.cfg, z_fake)
        loss = self.w("kl") * (kl_real - self.adversary * kl_fake)
        if self.cfg.adaptive_adversary:  # the authors' schedule for the next update: +0.001, or -0.019 to the floor
            # when a divergence exceeds the threshold times that of ideal codes (mean 0, variance 1/M)
            v = 1.0 / self.cfg.latent_dim
            ideal = 0.5 * v * v - math.log(v) - 0.5  # the authors' formula (the only divergence tested here with it)
            above = max(kl_real.item(), kl_fake.item()) > self.cfg.adaptive_threshold * ideal
            down = max(self.adversary + 0.001 - 0.02, self.cfg.adaptive_floor)
            self.adversary = down if above else self.adversary + 0.001
        if self.cfg.mu:
            loss = loss + self.w("mu") * F.l1_loss(self.g(z_real), x)
        if self.cfg.enc_latent_recon:
            loss = loss + latent_match(self.cfg, z, z_fake, self.w("enc_latent_recon"))
        return loss

    def generator_loss(self, x):  # eq. 5
        z = self.prior(len(x))
        z_fake = self.e(self.g(z))
        loss = self.w("kl") * divergence(self.cfg, z_fake)
        if self.cfg.lam:
            loss = loss + latent_match(self.cfg, z, z_fake, self.w("lam"))
        if self.cfg.gen_image_recon:
            loss = loss + self.w("gen_image_recon") * F.l1_loss(self.g(self.e(x).detach()), x)
        return loss


def trainer_model_and_batches(cfg):
    """The trainer's initial model (same seed, same layout) and its batch order."""
    data = load_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.channels)
    return model, data, BatchOrder(len(data), cfg.batch_size, cfg.seed)


def phase_gradients(cfg, scale=None):
    """Per phase and repeat: (fast-path grads, reference grads, fast loss, reference loss), same weights and z."""
    model, data, order = trainer_model_and_batches(cfg)
    ref = Reference(cfg, model, scale)
    fast = model.to(memory_format=torch.channels_last)
    images = data.images[order.indices(0)]
    batch = fast.prepare_batch(images, channels_last=True)
    x = to_float(images)
    ref_loss = {"enc": ref.encoder_loss, "gen": ref.generator_loss}
    ref_net = {"enc": ref.enc, "gen": ref.gen}
    out, phases = [], fast.phases()
    for phase in phases:
        phase_batch = batch if phase.begin is None else phase.begin(batch)  # as the trainer does
        for _ in range(phase.repeats):
            rng = torch.get_rng_state()
            for p in phases:  # as the trainer does: weight gradients for this phase's net only
                p.module.requires_grad_(p is phase)
                p.module.zero_grad(set_to_none=True)
            loss, _ = phase.loss(phase_batch)
            loss.backward()
            got = {k: p.grad for k, p in phase.module.named_parameters()}
            torch.set_rng_state(rng)  # the same latent draws
            ref.enc.zero_grad(set_to_none=True), ref.gen.zero_grad(set_to_none=True)
            loss_ref = ref_loss[phase.name](x)
            loss_ref.backward()
            want = {k: p.grad for k, p in ref_net[phase.name].named_parameters()}
            out.append((phase.name, got, want, loss.item(), loss_ref.item()))
    return out


def worst_gradient_error(cfg, scale=None) -> float:
    """max over phases and tensors of norm(grad_fast - grad_ref) / norm(grad_ref)."""
    worst = 0.0
    for name, got, want, loss, loss_ref in phase_gradients(cfg, scale):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] is not None, f"{name}: no gradient for {k}"
            err = (got[k] - want[k]).norm().item() / max(want[k].norm().item(), 1e-12)
            worst = max(worst, err)
    return worst


@pytest.mark.parametrize("game", list(GAMES))
def test_phase_gradients_match_a_straightforward_loop(tmp_path, game):
    cfg = config(tmp_path, game)
    for name, got, want, loss, loss_ref in phase_gradients(cfg):
        assert loss == pytest.approx(loss_ref, rel=1e-5, abs=1e-6), name
    assert worst_gradient_error(cfg) < GRAD_RTOL


@pytest.mark.parametrize("game, term", [("paper", "kl"), ("paper, image term x100", "mu"), ("paper", "lam"),
                                        ("swapped", "enc_latent_recon"),
                                        ("swapped, image term x100", "gen_image_recon")])
def test_the_gradient_check_catches_a_wrong_loss_weight(tmp_path, game, term):
    """A 1% change of one weight of the game (a deliberately wrong reference) fails the gradient check."""
    assert worst_gradient_error(config(tmp_path, game), scale={term: 1.01}) > 10 * GRAD_RTOL


def reference_loop(cfg, batch_offset=0):
    """A plain AGE loop on the trainer's batches and latent draws: weights, initial weights, per-iteration losses.

    ``batch_offset`` shifts the data order (a deliberately wrong loop)."""
    model, data, order = trainer_model_and_batches(cfg)
    ref = Reference(cfg, model)
    # The same Adam kernel as the trainer's on CPU (fused), on contiguous tensors.
    opt_e = torch.optim.Adam(ref.enc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    opt_g = torch.optim.Adam(ref.gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)

    def params():
        p = {f"encoder.{k}": v.detach().clone() for k, v in ref.enc.named_parameters()}
        p.update({f"generator.{k}": v.detach().clone() for k, v in ref.gen.named_parameters()})
        return p

    initial, losses, adversary_weights = params(), [], []
    for step in range(cfg.iterations):
        x = to_float(data.images[order.indices(step + batch_offset)])
        opt_e.zero_grad(), opt_g.zero_grad()
        adversary_weights.append(ref.adversary)
        loss_e = ref.encoder_loss(x)
        loss_e.backward()
        opt_e.step()
        gen_losses = []
        for _ in range(cfg.n_gen_steps):
            opt_e.zero_grad(), opt_g.zero_grad()
            loss_g = ref.generator_loss(x)
            loss_g.backward()
            opt_g.step()
            gen_losses.append(loss_g.item())
        losses.append((loss_e.item(), sum(gen_losses) / len(gen_losses)))  # the trainer logs the mean
    return params(), initial, losses, adversary_weights


@pytest.mark.parametrize("game", ["paper", "swapped", "paper-adaptive (default)"])
def test_agelab_train_matches_a_straightforward_loop(tmp_path, game):
    cfg = config(tmp_path, game)
    assert cfg.channels_last  # the fast path is the default
    run = train(cfg, progress=False)
    fast = checkpoint_weights(run, ITERATIONS)
    ref, initial, ref_losses, ref_adversary = reference_loop(cfg)

    assert set(ref) <= set(fast)
    assert relative_update_error(fast, ref, initial) < UPDATE_RTOL
    records = [r for r in read_metrics(run) if "enc/loss" in r]
    assert [r["step"] for r in records] == list(range(1, ITERATIONS + 1))
    for r, (loss_e, loss_g) in zip(records, ref_losses):
        assert r["enc/loss"] == pytest.approx(loss_e, rel=1e-4, abs=1e-4)
        assert r["gen/loss"] == pytest.approx(loss_g, rel=1e-4, abs=1e-4)
    if cfg.adaptive_adversary:  # the weight each encoder update used, and the schedule really moved it
        assert [r["enc/adv_weight"] for r in records] == pytest.approx(ref_adversary, abs=1e-6)
        assert len(set(round(w, 6) for w in ref_adversary)) == ITERATIONS


def test_the_adaptive_weight_stops_at_its_floor_as_in_the_straightforward_loop(tmp_path):
    """--adaptive-floor 0.99: the first drop (1.0 + 0.001 - 0.02) stops at the floor, in both loops."""
    cfg = config(tmp_path, "paper-adaptive (default)", adaptive_floor=0.99)
    run = train(cfg, progress=False)
    ref, initial, _, ref_adversary = reference_loop(cfg)
    assert relative_update_error(checkpoint_weights(run, ITERATIONS), ref, initial) < UPDATE_RTOL
    used = [r["enc/adv_weight"] for r in read_metrics(run) if "enc/loss" in r]
    assert used == pytest.approx(ref_adversary, abs=1e-6)
    assert min(used) == pytest.approx(0.99, abs=1e-6)  # the floor was reached, and held


def test_the_weight_check_catches_a_wrong_batch_order(tmp_path):
    """The reference one batch ahead (as a stale or wrong batch would give) fails the weight check."""
    cfg = config(tmp_path, "paper")
    run = train(cfg, progress=False)
    ref, initial, _, _ = reference_loop(cfg, batch_offset=1)
    assert relative_update_error(checkpoint_weights(run, ITERATIONS), ref, initial) > 10 * UPDATE_RTOL

