"""The AGE model: encoding, the two losses (paper eq. 5-7) and its phases (that each phase moves only its own
network is specified for every model in test_model_battery.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agelab.divergences import kl_gaussian, kl_gaussian_reference
from agelab.models import Phase
from agelab.models.age import AGE, GameConfig, ModelConfig, frozen_bn_stats


def make_model(prior="sphere", latent_dim=4, channels=1, **game) -> AGE:
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=latent_dim, channels=channels, image_size=32, width=4, prior=prior)
    return AGE(cfg, GameConfig(**game))


def batch(n=8, channels=1, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, 32, 32, generator=g) * 2 - 1


def buffers(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_buffers()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SWAPPED_GAME = dict(mu=0.0, lam=0.0, enc_latent_recon=1000.0, gen_image_recon=10.0)  # the presets': image term on g
GAMES = [dict(), SWAPPED_GAME]  # the paper's, and the presets' (every pass of both phases runs on two batches)


def run_phase(phase: Phase, x) -> list[torch.Tensor]:
    """A phase's updates on one batch as the trainer runs them (without stepping): begin once, then ``repeats`` losses."""
    b = x if phase.begin is None else phase.begin(x)
    return [phase.loss(b)[0] for _ in range(phase.repeats)]


# ---------------------------------------------------------------------------
# use of a model
# ---------------------------------------------------------------------------
def test_encode_lies_on_unit_sphere_for_sphere_prior():
    model = make_model("sphere")
    z = model.encode(batch())
    assert z.shape == (8, 4)
    assert torch.allclose(z.norm(dim=1), torch.ones(8), atol=1e-5)


def test_encode_is_unnormalised_for_gaussian_prior():
    model = make_model("gaussian")
    x = batch()
    z = model.encode(x)
    assert torch.equal(z, model.encoder(x))
    assert not torch.allclose(z.norm(dim=1), torch.ones(8), atol=1e-2)


def test_decode_reconstruct_and_sample_shapes():
    model = make_model(channels=3)
    x = batch(channels=3)
    assert model.decode(model.encode(x)).shape == x.shape
    assert model.reconstruct(x).shape == x.shape
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 3, 32, 32) and s.abs().max() <= 1
    assert model.sample_latent(5).shape == (5, 4)


def test_phases_are_encoder_once_then_generator_n_gen_steps():
    model = make_model(n_gen_steps=3)
    phases = model.phases()
    assert [p.name for p in phases] == ["enc", "gen"]
    assert all(isinstance(p, Phase) for p in phases)
    assert phases[0].module is model.encoder and phases[0].repeats == 1
    assert phases[1].module is model.generator and phases[1].repeats == 3


# ---------------------------------------------------------------------------
# the losses
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("divergence, scale, kl", [
    ("gaussian_reference", "mean", kl_gaussian_reference),  # the default: the authors' formula, averaged
    ("gaussian", "sum", kl_gaussian),  # eq. 7 as printed
    ("gaussian", "mean", lambda z: kl_gaussian(z) / z.shape[1]),  # eq. 7 per coordinate
])
def test_encoder_loss_is_kl_real_minus_kl_fake_plus_mu_l1(divergence, scale, kl):
    model = make_model(mu=7.0, divergence=divergence, scale=scale)
    x = batch()
    loss, logs = model.encoder_loss(x)
    assert set(logs) == {"kl_real", "kl_fake", "rec_x", "loss"}
    assert torch.allclose(loss, logs["kl_real"] - logs["kl_fake"] + 7.0 * logs["rec_x"], rtol=1e-5, atol=1e-5)
    # the logged rec_x is the mean absolute error of g(e(x)) (batch statistics in train mode: recomputable)
    assert logs["rec_x"].item() == pytest.approx(F.l1_loss(model.reconstruct(x), x).item(), rel=1e-5)
    assert logs["kl_real"].item() == pytest.approx(kl(model.encode(x)).item(), rel=1e-5)
    assert all(not v.requires_grad for v in logs.values())


def test_the_default_game_is_the_papers_at_the_authors_scale():
    game = GameConfig()
    assert (game.divergence, game.scale, game.mu, game.lam, game.n_gen_steps) == ("gaussian_reference", "mean",
                                                                                   10.0, 1000.0, 2)
    assert (game.enc_latent_recon, game.gen_image_recon) == (0.0, 0.0)


@pytest.mark.parametrize("scale", ["sum", "mean"])
def test_generator_latent_term_is_lambda_one_minus_cos_per_code_or_per_coordinate(scale):
    lam, m = 123.0, 4
    model = make_model(lam=lam, latent_dim=m, divergence="gaussian", scale=scale)
    x = batch()
    torch.manual_seed(42)
    loss, logs = model.generator_loss(x)
    assert set(logs) == {"kl_fake", "rec_z", "loss"}
    # recompute with the same latent draw
    torch.manual_seed(42)
    z = model.sample_latent(8)
    with frozen_bn_stats(model.encoder):
        z_fake = model.encode(model.decode(z))
    rec_z = (z - z_fake).pow(2).sum(1).mean()
    assert logs["rec_z"].item() == pytest.approx(rec_z.item(), rel=1e-5)
    per = m if scale == "mean" else 1
    assert logs["kl_fake"].item() == pytest.approx(kl_gaussian(z_fake).item() / per, rel=1e-5)
    term = (loss - logs["kl_fake"]).item()
    assert term == pytest.approx(lam / 2 * rec_z.item() / per, rel=1e-4)
    # on the sphere this is lam * (1 - cos) (/ M on the authors' scale)
    one_minus_cos = (1 - F.cosine_similarity(z, z_fake, dim=1)).mean()
    assert term == pytest.approx(lam * one_minus_cos.item() / per, rel=1e-3)
    if scale == "mean":  # the authors' match: lam * (2 - mean of z * e(g(z)) over all B x M elements), less a constant
        authors = lam * (2 - (z * z_fake).mean())
        assert term == pytest.approx(authors.item() - lam * (2 - 1 / m), rel=1e-3)


def test_no_recon_drops_both_reconstruction_terms():
    model = make_model(no_recon=True)
    x = batch()
    enc_loss, enc_logs = model.encoder_loss(x)
    gen_loss, gen_logs = model.generator_loss(x)
    assert set(enc_logs) == {"kl_real", "kl_fake", "loss"}
    assert set(gen_logs) == {"kl_fake", "loss"}
    assert torch.allclose(enc_loss, enc_logs["kl_real"] - enc_logs["kl_fake"])
    assert torch.equal(gen_loss.detach(), gen_logs["kl_fake"])


def test_gen_image_recon_adds_weighted_l1_to_generator_loss():
    x = batch()
    assert "rec_x" not in make_model().generator_loss(x)[1]
    model = make_model(gen_image_recon=3.0, lam=10.0, scale="sum")
    loss, logs = model.generator_loss(x)
    assert "rec_x" in logs and logs["rec_x"].item() > 0
    expected = logs["kl_fake"] + 5.0 * logs["rec_z"] + 3.0 * logs["rec_x"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the term reaches the generator's weights
    model.encoder.requires_grad_(False)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.generator.parameters())


def test_enc_latent_recon_adds_half_weighted_latent_term_to_encoder_loss():
    x = batch()
    assert "rec_z" not in make_model().encoder_loss(x)[1]
    model = make_model(enc_latent_recon=6.0, mu=0.0, scale="sum")
    torch.manual_seed(5)
    loss, logs = model.encoder_loss(x)
    assert "rec_x" not in logs  # mu = 0 skips the g(e(x)) pass
    assert loss.item() == pytest.approx((logs["kl_real"] - logs["kl_fake"] + 3.0 * logs["rec_z"]).item(), rel=1e-5)
    # recompute the latent term from the same prior draw
    torch.manual_seed(5)
    z = model.sample_latent(x.shape[0])
    with torch.no_grad(), frozen_bn_stats(model.encoder):
        z_rec = model.encode(model.decode(z))
    assert logs["rec_z"].item() == pytest.approx((z - z_rec).pow(2).sum(1).mean().item(), rel=1e-5)


def test_swapped_assignment_trains_each_term_on_the_other_network():
    model = make_model(mu=0.0, lam=0.0, enc_latent_recon=1000.0, gen_image_recon=10.0)
    x = batch()
    enc_logs = model.encoder_loss(x)[1]
    gen_logs = model.generator_loss(x)[1]
    assert set(enc_logs) == {"kl_real", "kl_fake", "rec_z", "loss"}
    assert set(gen_logs) == {"kl_fake", "rec_x", "loss"}


@pytest.mark.parametrize("divergence", ["gaussian", "gaussian_reference", "knn"])
@pytest.mark.parametrize("prior", ["sphere", "gaussian"])
def test_all_divergences_give_finite_losses_and_gradients(divergence, prior):
    model = make_model(prior, divergence=divergence, knn_k=2, knn_prior_samples=32)
    x = batch()
    phases = model.phases()
    for phase in phases:
        for p in phases:
            p.module.requires_grad_(p is phase)
        loss, logs = phase.loss(x)
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(torch.isfinite(v) for v in logs.values())
        loss.backward()
        grads = [p.grad for p in phase.module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
        model.zero_grad(set_to_none=True)


def test_unknown_divergence_raises():
    model = make_model(divergence="wasserstein")
    with pytest.raises(ValueError):
        model.divergence(torch.randn(8, 4))


def test_frozen_bn_stats_keeps_running_statistics_and_restores_momentum():
    model = make_model()
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = buffers(model.encoder)
    momenta = [m.momentum for m in bns]
    with frozen_bn_stats(model.encoder):
        model.encode(batch(seed=1) * 0.3 + 0.5)
    assert same(before, buffers(model.encoder))
    assert [m.momentum for m in bns] == momenta
    model.encode(batch(seed=1))  # outside the context: statistics move again
    after = buffers(model.encoder)
    assert not torch.equal(before["features.3.running_mean"], after["features.3.running_mean"])


@pytest.mark.parametrize("game", GAMES)
def test_generator_phase_leaves_encoder_statistics_alone(game):
    model = make_model(**game)
    before = buffers(model.encoder)
    run_phase(model.phases()[1], batch())
    assert same(before, buffers(model.encoder))


def test_sample_images_is_seeded_and_leaves_global_rng_alone():
    from agelab.sampling import sample_images

    model = make_model().eval()
    state = torch.get_rng_state()
    a = sample_images(model, 300, seed=3, batch=128)  # several batches
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (300, 1, 32, 32)
    assert torch.equal(a, sample_images(model, 300, seed=3))
    z = model.prior.sample(300, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, model.decode(z), atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_generator_updates_of_one_batch_share_one_encoding_of_it(fast):
    """With the image term on the generator, the phase's begin encodes the batch once, without a graph, and every
    update reads that code: the encoder runs on x once per phase and on g(z) once per update. A loss given the plain
    batch encodes it itself, to the same value."""
    model = make_model(**SWAPPED_GAME, n_gen_steps=3).use_fast_ops(fast)
    x = batch()
    inputs = []
    model.encoder.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0]))
    gen = model.phases()[1]
    coded = gen.begin(x)
    assert len(inputs) == 1 and inputs[0] is x and not coded.codes.requires_grad
    torch.manual_seed(1)
    losses = run_phase(gen, coded)
    assert len(inputs) == 1 + gen.repeats and not any(t is x for t in inputs[1:])  # e(g(z)) of each update
    torch.manual_seed(1)
    fresh = [gen.loss(x)[0] for _ in range(gen.repeats)]
    assert all(torch.equal(a, b) for a, b in zip(fresh, losses))


def test_generator_phase_without_its_image_term_encodes_no_batch():
    model = make_model()
    calls = []
    model.encoder.register_forward_hook(lambda mod, inp, out: calls.append(1))
    assert model.phases()[1].begin(batch()).codes is None and not calls


def _relative_errors(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    return [((u - v).norm() / v.norm().clamp_min(1e-12)).item() for u, v in zip(a, b, strict=True)]


@pytest.mark.parametrize("game", GAMES)
def test_fast_ops_change_no_loss_gradient_or_statistic(game):
    """Every update of both phases with the nets' fast forms and stacked passes on and off, on the same weights,
    batch and latent draws: the same loss, weight gradients and batch-norm statistics to 1e-4 of each tensor's
    norm, the phase gradients' tolerance of tests/test_equivalence.py (rounding: up to 3e-6, AMD EPYC)."""
    x = batch()
    results = []
    for fast in (True, False):
        model = make_model(**game).use_fast_ops(fast)
        phases, out = model.phases(), []
        for phase in phases:
            for p in phases:  # as the trainer does: weight gradients for this phase's net only
                p.module.requires_grad_(p is phase)
            torch.manual_seed(1)
            for loss in run_phase(phase, x):
                out += [loss, *torch.autograd.grad(loss, list(phase.module.parameters()), retain_graph=True)]
            out += [b for b in buffers(model).values() if b.is_floating_point()]
        results.append(out)
    assert max(_relative_errors(*results)) < 1e-4


@pytest.mark.parametrize("game", GAMES)
def test_fast_ops_train_to_the_same_weights(game):
    """Three iterations of both phases with Adam, with the fast forms on and off: the weights differ by float
    rounding only (relative to the update, conftest.UPDATE_RTOL)."""
    from conftest import UPDATE_RTOL, relative_update_error

    x = batch()
    weights, losses = [], []
    for fast in (True, False):
        model = make_model(**game).use_fast_ops(fast)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        phases = model.phases()
        opts = {p.name: torch.optim.Adam(p.module.parameters(), lr=2e-4, betas=(0.5, 0.999)) for p in phases}
        torch.manual_seed(1)
        out = []
        for _ in range(3):
            for phase in phases:
                for p in phases:
                    p.module.requires_grad_(p is phase)
                b = x if phase.begin is None else phase.begin(x)
                for _ in range(phase.repeats):
                    opts[phase.name].zero_grad(set_to_none=True)
                    loss, _ = phase.loss(b)
                    loss.backward()
                    opts[phase.name].step()
                    out.append(loss.item())
        weights.append(model.state_dict())
        losses.append(out)
    assert relative_update_error(weights[0], weights[1], initial) < UPDATE_RTOL
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_stacked_passes_run_where_the_nets_are_fast_and_not_compiled():
    """A phase's two passes through a net share its code-end product (agelab.ops.stacked, through the net's parts)
    where the net is fast; with --compile, whose compiled code runs through forward, and with the fast forms off,
    every pass is a call of the net, as for a model that conditions its passes (stacks_passes = False)."""
    model = make_model(**SWAPPED_GAME)
    calls = []
    for net in (model.encoder, model.generator):
        net.register_forward_hook(lambda mod, inp, out: calls.append(mod))
    x = batch()

    def net_calls(loss) -> tuple[int, int]:
        calls.clear()
        loss(x)
        return sum(c is model.encoder for c in calls), sum(c is model.generator for c in calls)

    # encoder phase: e(x), e(g(z)) stacked (and g(z) without a graph); generator phase: g(z), g(e(x)) stacked (and
    # e(x) for the codes, e(g(z)))
    assert net_calls(model.encoder_loss) == (0, 1) and net_calls(model.generator_loss) == (2, 0)
    for switch_off in (lambda: setattr(model, "compiled", True),  # what the trainer sets for --compile
                       lambda: model.use_fast_ops(False)):
        model.compiled = False
        model.use_fast_ops(True)
        switch_off()
        assert net_calls(model.encoder_loss) == (2, 1) and net_calls(model.generator_loss) == (2, 2)


def test_adaptive_adversary_weight_follows_the_authors_schedule():
    """+0.001 per encoder update while both divergences are below 1.05 x the ideal codes' value, else -0.019,
    never below 0; steps scaled by lr / initial lr; the weight used is the one before the update."""
    from agelab.divergences import ideal_gaussian_divergence

    model = make_model(adaptive_adversary=True, adversary_weight=0.01)
    limit = 1.05 * ideal_gaussian_divergence("gaussian_reference", 4)
    low, high = torch.tensor(limit * 0.99), torch.tensor(limit * 1.01)
    model._adapt_adversary(low, low)
    assert model.adversary_weight.item() == pytest.approx(0.011)
    model._adapt_adversary(low, high)
    assert model.adversary_weight.item() == 0.0  # 0.011 - 0.019, floored
    model.adversary_weight.fill_(1.0)
    model.lr_factor.fill_(0.5)
    model._adapt_adversary(high, low)
    assert model.adversary_weight.item() == pytest.approx(1.0 - 0.5 * 0.019)
    # in the encoder loss: the current weight on D(e(g(z))), logged, then updated for the next update
    model.adversary_weight.fill_(0.25)
    loss, logs = model.encoder_loss(batch())
    assert logs["adv_weight"].item() == 0.25 and model.adversary_weight.item() != 0.25
    expected = logs["kl_real"] - 0.25 * logs["kl_fake"] + 10.0 * logs["rec_x"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()  # the update for the next step leaves this step's graph intact
    assert model.train_state()["adversary_weight"].item() == model.adversary_weight.item()
    assert "adversary_weight" not in model.state_dict()  # not a weight: checkpointed with the training state


def test_adaptive_adversary_weight_never_drops_below_its_floor():
    """--adaptive-floor: a drop stops at the floor (the authors' 0 by default); the rise is unchanged."""
    from agelab.divergences import ideal_gaussian_divergence

    model = make_model(adaptive_adversary=True, adversary_weight=0.31, adaptive_floor=0.3)
    limit = 1.05 * ideal_gaussian_divergence("gaussian_reference", 4)  # GameConfig's threshold (the authors')
    low, high = torch.tensor(limit * 0.99), torch.tensor(limit * 1.01)
    for _ in range(3):
        model._adapt_adversary(high, low)
    assert model.adversary_weight.item() == pytest.approx(0.3)
    model._adapt_adversary(low, low)
    assert model.adversary_weight.item() == pytest.approx(0.301)


def test_ideal_divergences_are_the_values_of_uniform_sphere_codes():
    from agelab.divergences import ideal_gaussian_divergence, kl_gaussian, kl_gaussian_reference

    torch.manual_seed(0)
    z = torch.randn(200000, 8, dtype=torch.float64)
    z = z / z.norm(dim=1, keepdim=True)
    assert kl_gaussian(z).item() == pytest.approx(ideal_gaussian_divergence("gaussian", 8), abs=2e-3)
    assert kl_gaussian_reference(z).item() == pytest.approx(ideal_gaussian_divergence("gaussian_reference", 8), abs=2e-3)
