"""What every registered model does, as one specification run over each model class.

`TestEveryModel` is parametrized over :data:`agelab.models.MODEL_TYPES`: a new model type is
tested by registering it. Each test states one property of the GenerativeModel interface
(docs/architecture.md, "Models"): the registry and the declared capabilities, the phases
(each steps only its own networks, in the real trainer), sampling, encoding, the training
state beside the weights, and the checkpoint round trip. Tiny nets (width 4, latent 3, 32x32).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

import agelab
from agelab import checkpoint as ckpt
from agelab import trainer
from agelab.config import MODELS, ConfigError, TrainConfig
from agelab.models import BASELINE_MODELS, COLORIZATION_MODELS, MODEL_TYPES, make_model, model_class
from agelab.models.age import AGE, GameConfig
from agelab.models.base import GenerativeModel, ModelConfig
from agelab.models.pix2pix import Pix2PixConfig

# What each model type's phases are called, in order (their repeats: AGE's generator n_gen_steps times).
PHASES = {"age": ("enc", "gen"), "cage": ("enc", "gen"), "pix2pix": ("disc", "gen"), "dcgan": ("disc", "gen"),
          "vae": ("vae",), "ali": ("disc", "encgen")}
# The networks (top-level state_dict names) of each model type: a phase's group of networks (ModuleGroup) must not
# register a network twice (safetensors refuses shared tensors).
NETWORKS = {"age": {"encoder", "generator"}, "cage": {"encoder", "generator"}, "pix2pix": {"generator", "discriminator"},
            "dcgan": {"discriminator", "generator"}, "vae": {"encoder", "generator"},
            "ali": {"encoder", "generator", "discriminator"}}
# The checkpoint layout of each model type at the tiny config below: (number of tensors, sha256 of the sorted
# "name shape dtype" lines), recorded from checkpoints written before the GenerativeModel base class. A change
# here means old checkpoints no longer load.
LAYOUT = {
    "age": (34, "c2b0639ac1981464"),
    "cage": (59, "c7aa09603df8702c"),
    "pix2pix": (70, "3ad2ab7cd5787d31"),
    "dcgan": (34, "5b6f4ebb11feb805"),
    "vae": (34, "9b84efb16064dbfb"),
    "ali": (57, "9f31a8574b61bfe2"),
}
# Networks whose batch-norm running statistics a phase leaves alone although it runs them in training mode
# (frozen_bn_stats): AGE's generator phase passes g(z) through e, pix2pix's through D.
FROZEN_STATS = {"age": {"gen": "encoder"}, "cage": {"gen": "encoder"}, "pix2pix": {"gen": "discriminator"}}
CAPABILITIES = ("has_encoder", "conditional", "age_game")
# The training-config fields set by a TrainConfig field of another name, and those no TrainConfig field sets (they keep
# their defaults in a trained run); every other field is set by the TrainConfig field of its own name.
RENAMED_OPTIONS = {"scale": "game_scale"}
NO_OPTION = {"pix2pix": {"l1_weight"}}
# Non-default AGE game options of a run (--mu, --game-scale, --n-gen-steps, ...).
GAME_OPTIONS = dict(mu=0.0, lam=5.0, enc_latent_recon=7.0, gen_image_recon=3.0, adversary_weight=0.3, game_scale="sum",
                    adaptive_adversary=False, n_gen_steps=3)


def tiny_model_config(kind: str, **changes) -> ModelConfig:
    cls = model_class(kind)
    values = dict(latent_dim=3, channels=3 if cls.conditional else 1, image_size=32, width=4,
                  prior=cls.required_prior or "sphere", model=kind, res_blocks=1)
    values.update(changes)
    return ModelConfig(**values)


def build(kind: str, config=None, seed: int = 0, **changes) -> GenerativeModel:
    """A tiny model of type ``kind``; ``config``: its training config (None: the defaults)."""
    torch.manual_seed(seed)
    return make_model(tiny_model_config(kind, **changes), config)


def other_value(value):
    """A value of the same type as ``value`` and different from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return value + "-other"


def images_u8(model: GenerativeModel, n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, model.cfg.channels, 32, 32), generator=g, dtype=torch.uint8)


def condition(model: GenerativeModel, batch):
    """The batch's condition (the lightness L of a colorization batch), None for an unconditional model."""
    return model.split_batch(batch)[1]


def snapshot(tensors) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_registry_is_the_one_list_of_model_names():
    assert MODELS == tuple(MODEL_TYPES) == ("age", "cage", "pix2pix", "dcgan", "vae", "ali")  # the --model choices
    assert set(PHASES) == set(MODEL_TYPES)  # this file specifies every registered model
    assert COLORIZATION_MODELS == ("cage", "pix2pix") and BASELINE_MODELS == ("dcgan", "vae", "ali")
    with pytest.raises(ValueError, match="unknown model type 'flow'; known: age, cage, pix2pix, dcgan, vae, ali"):
        model_class("flow")


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """30 small colour images (every 10th is held out as test by the folder loader)."""
    folder = tmp_path_factory.mktemp("colour-images")
    rng = np.random.default_rng(0)
    for i in range(30):
        img = rng.integers(0, 256, (34 + i % 3, 40 + i % 5, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("kind", tuple(MODEL_TYPES))
class TestEveryModel:
    # ---- the registry and the declared capabilities ---------------------------------------------------
    def test_the_registered_class_builds_the_model_of_its_name(self, kind):
        cls = model_class(kind)
        assert issubclass(cls, GenerativeModel) and cls.kind == kind
        model = build(kind)
        assert type(model) is cls and model.cfg.model == kind
        assert all(isinstance(getattr(cls, name), bool) for name in CAPABILITIES)
        assert cls.age_game == issubclass(cls, AGE)

    def test_the_networks_and_checkpoint_layout_are_those_of_older_checkpoints(self, kind):
        sd = build(kind).state_dict()
        assert {k.split(".")[0] for k in sd} == NETWORKS[kind]
        lines = "\n".join(f"{k} {tuple(sd[k].shape)} {str(sd[k].dtype).removeprefix('torch.')}" for k in sorted(sd))
        assert (len(sd), hashlib.sha256(lines.encode()).hexdigest()[:16]) == LAYOUT[kind]

    def test_model_json_holds_the_fields_the_model_type_reads(self, kind):
        cfg = tiny_model_config(kind)
        d = cfg.to_dict()
        assert ("res_blocks" in d) == ("res_blocks" in model_class(kind).model_fields) == (kind == "cage")
        assert d["model"] == kind and ModelConfig.from_dict(d).to_dict() == d

    def test_a_batch_is_x_or_x_with_its_condition(self, kind):
        model = build(kind)
        batch = model.prepare_batch(images_u8(model))
        x, c = model.split_batch(batch)
        assert x.abs().max() <= 1
        if model.conditional:  # colorization: ab and the lightness L of the RGB images, in Lab space
            assert isinstance(batch, tuple) and x.shape == (8, 2, 32, 32) and c.shape == (8, 1, 32, 32)
            assert c.abs().max() <= 1
        else:
            assert isinstance(batch, torch.Tensor) and x.shape == (8, model.cfg.channels, 32, 32) and c is None
        x_cl, _ = model.split_batch(model.prepare_batch(images_u8(model), channels_last=True))
        assert torch.equal(x_cl, x) and x_cl.is_contiguous(memory_format=torch.channels_last)

    def test_a_conditional_model_needs_its_condition(self, kind):
        model = build(kind)
        z = model.sample_latent(2)
        if model.conditional:
            for call in (lambda: model.decode(z), lambda: model.sample(2)):
                with pytest.raises(TypeError, match="lightness"):
                    call()
        else:
            assert model.decode(z).shape == (2, model.cfg.channels, 32, 32)

    def test_the_prior_is_the_model_s_own(self, kind):
        cls = model_class(kind)
        for prior in ("sphere", "gaussian"):
            if cls.required_prior in (None, prior):
                assert build(kind, prior=prior).prior.name == prior
            else:  # the VAE: N(0, I) only, in the model and in the run's config
                with pytest.raises(ValueError, match="prior"):
                    build(kind, prior=prior)
                with pytest.raises(ConfigError, match="--prior"):
                    TrainConfig(dataset="cars", model=kind, prior=prior).validate()

    # ---- the training config ------------------------------------------------------------------------
    def test_the_class_declares_its_training_config_and_builds_it_from_a_run_s_options(self, kind):
        """config_class is the model's own frozen dataclass (the AGE models': the GameConfig); config_from sets
        each field from the TrainConfig field of its name (RENAMED_OPTIONS where the names differ), and leaves
        the fields no option sets at their defaults. A model built without a config has the defaults."""
        cls = model_class(kind)
        assert dataclasses.is_dataclass(cls.config_class) and cls.config_class.__dataclass_params__.frozen
        assert (cls.config_class is GameConfig) == cls.age_game
        run = TrainConfig()
        config = cls.config_from(run)
        assert type(config) is cls.config_class
        for field in dataclasses.fields(cls.config_class):
            if field.name in NO_OPTION.get(kind, ()):
                assert getattr(config, field.name) == field.default
                continue
            option = RENAMED_OPTIONS.get(field.name, field.name)
            assert getattr(config, field.name) == getattr(run, option), field.name
            changed = other_value(getattr(run, option))
            assert getattr(cls.config_from(run.replace(**{option: changed})), field.name) == changed, field.name
        assert build(kind).config == cls.config_class()

    def test_a_model_takes_only_its_own_training_config(self, kind):
        cls = model_class(kind)
        for other in MODEL_TYPES:
            foreign = model_class(other).config_class
            if foreign is not cls.config_class:
                with pytest.raises(TypeError, match=f"is a {cls.config_class.__name__}, got a {foreign.__name__}"):
                    build(kind, foreign())

    def test_the_trainer_builds_the_model_with_its_config_from_the_run_s_options(self, kind):
        """trainer.build_model gives the model ``config_from`` the run's options. The AGE game's options reach the
        AGE models (n_gen_steps: the generator phase's repeats); the other models compute the same losses whatever
        they are (--mu with --model dcgan changes nothing) and carry none of the game's state."""
        cls = model_class(kind)
        channels = 3 if cls.conditional else 1
        run = TrainConfig(model=kind, prior=cls.required_prior or "sphere", latent_dim=3, width=4, res_blocks=1)
        torch.manual_seed(0)
        a = trainer.build_model(run, channels)
        torch.manual_seed(0)
        b = trainer.build_model(run.replace(**GAME_OPTIONS), channels)
        assert a.config == cls.config_from(run) and b.config == cls.config_from(run.replace(**GAME_OPTIONS))
        if cls.age_game:
            assert b.config.mu == 0.0 and b.config.scale == "sum" and [p.repeats for p in b.phases()] == [1, 3]
            return
        assert a.config == b.config
        assert [p.repeats for p in a.phases()] == [p.repeats for p in b.phases()] == [1] * len(PHASES[kind])
        batch = a.prepare_batch(images_u8(a))
        for pa, pb in zip(a.phases(), b.phases()):
            torch.manual_seed(1)
            la, _ = pa.loss(batch)
            torch.manual_seed(1)
            lb, _ = pb.loss(batch)
            assert torch.equal(la, lb), pa.name
        for attr in ("adversary_weight", "lr_factor"):
            assert not hasattr(a, attr), attr
        assert dict(a.named_buffers(recurse=False)) == {}

    def test_the_shared_machinery_is_the_base_class_s(self, kind):
        cls = model_class(kind)
        for name in ("split_batch", "batch_latent", "sample_latent", "sample", "reconstruct", "device"):
            assert getattr(cls, name) is getattr(GenerativeModel, name), name

    # ---- phases -----------------------------------------------------------------------------------------
    def test_phases_step_disjoint_parameter_sets_that_cover_the_model(self, kind):
        model = build(kind)
        phases = model.phases()
        assert tuple(p.name for p in phases) == PHASES[kind]
        owned = [{id(t) for t in p.module.parameters()} for p in phases]
        assert sum(len(o) for o in owned) == len(set().union(*owned))  # no parameter in two phases
        assert set().union(*owned) == {id(t) for t in model.parameters()}  # every parameter is trained

    def test_each_phase_loss_gives_gradients_only_where_it_should(self, kind):
        """With the other phases frozen (as the trainer does), backward reaches exactly the phase's parameters;
        the loss is a finite scalar and the logs are detached scalars, "loss" among them."""
        model = build(kind)
        batch = model.prepare_batch(images_u8(model))
        phases = model.phases()
        for phase in phases:
            for p in phases:
                p.module.requires_grad_(p is phase)
            model.zero_grad(set_to_none=True)
            loss, logs = phase.loss(batch)
            assert loss.dim() == 0 and math.isfinite(loss.item()) and "loss" in logs
            assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in logs.values()), logs
            loss.backward()
            mine = {id(t) for t in phase.module.parameters()}
            for t in model.parameters():
                assert (t.grad is not None) == (id(t) in mine)
            assert sum(t.grad.abs().sum() for t in phase.module.parameters()) > 0

    def test_the_nets_fast_forms_change_no_loss(self, kind):
        """``use_fast_ops(False)`` runs every net through its layers as written: each phase's loss (its begin
        first, as the trainer does) on the same weights, batch and latent draws equals the fast forms' to
        float rounding."""
        model = build(kind)
        batch = model.prepare_batch(images_u8(model))
        losses = []
        for fast in (True, False):
            model.use_fast_ops(fast)
            out = []
            for phase in model.phases():
                torch.manual_seed(1)
                out.append(phase.loss(batch if phase.begin is None else phase.begin(batch))[0].item())
            losses.append(out)
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)

    def test_training_steps_each_phase_s_own_networks_only(self, kind, monkeypatch, tmp_path, colour_folder):
        """Through the real trainer: during a phase only its networks require gradients, and between two
        consecutive loss evaluations (one optimiser step) only the networks of the phase evaluated first moved,
        and the batch-norm statistics that phase freezes did not."""
        calls = []
        build_model = trainer.build_model

        def spying_build(cfg, channels):
            model = build_model(cfg, channels)
            make_phases = model.phases

            def phases():
                out = make_phases()
                for phase in out:
                    def loss(batch, _loss=phase.loss, _name=phase.name):
                        calls.append({
                            "phase": _name,
                            "params": {p.name: snapshot(p.module.parameters()) for p in out},
                            "trainable": {p.name: [t.requires_grad for t in p.module.parameters()] for p in out},
                            "stats": {net: snapshot(getattr(model, net).buffers()) for net in NETWORKS[kind]},
                        })
                        return _loss(batch)

                    phase.loss = loss
                return out

            model.phases = phases
            return model

        monkeypatch.setattr(trainer, "build_model", spying_build)
        data = (dict(dataset="folder", data_root=str(colour_folder)) if model_class(kind).conditional
                else dict(dataset="digits"))
        cfg = TrainConfig(**data, model=kind, prior=model_class(kind).required_prior or "sphere", image_size=32,
                          latent_dim=3, width=4, res_blocks=1, batch_size=8, iterations=2, n_gen_steps=2, lr=1e-2,
                          log_every=1, sample_every=1000, ckpt_every=1000, device="cpu", out_dir=str(tmp_path))
        trainer.train(cfg.validate(), progress=False)

        repeats = {"enc": 1, "gen": 2} if model_class(kind).age_game else {}
        assert [c["phase"] for c in calls] == [n for n in PHASES[kind] for _ in range(repeats.get(n, 1))] * 2
        for c in calls:  # the other phases' networks are frozen while a phase runs
            for name, flags in c["trainable"].items():
                assert flags and all(f == (name == c["phase"]) for f in flags), (c["phase"], name)
        for before, after in zip(calls, calls[1:]):
            for name in before["params"]:
                moved = not same(before["params"][name], after["params"][name])
                assert moved == (name == before["phase"]), (before["phase"], name)
            frozen = FROZEN_STATS.get(kind, {}).get(before["phase"])
            if frozen is not None:
                assert same(before["stats"][frozen], after["stats"][frozen]), (before["phase"], frozen)
                assert before["stats"][frozen]  # there are statistics to keep

    # ---- use of a trained model ----------------------------------------------------------------------
    def test_samples_are_images_in_range_and_seeded(self, kind):
        model = build(kind)
        batch = model.prepare_batch(images_u8(model, 5))
        c = condition(model, batch)
        model.train()  # batch statistics: a fresh net's eval-mode outputs are ~1e-7
        with torch.no_grad():
            z = model.sample_latent(5, generator=torch.Generator().manual_seed(3))
            assert z.shape == (5, 3) and torch.equal(z, model.sample_latent(5, generator=torch.Generator().manual_seed(3)))
            x = model.decode(z, c)
            out_channels = 2 if model.conditional else model.cfg.channels
            assert x.shape == (5, out_channels, 32, 32) and x.abs().max() <= 1 and x.std() > 0
            if not model.conditional:
                s = model.sample(5, generator=torch.Generator().manual_seed(3))
                assert torch.equal(s, x)  # sample = decode(z), z ~ prior

    def test_encode_decode_reconstruct_where_there_is_an_encoder(self, kind):
        model = build(kind)
        x, c = model.split_batch(model.prepare_batch(images_u8(model)))
        if not model.has_encoder:  # no reconstructions, interpolation between images or probes
            for call in (lambda: model.encode(x, c), lambda: model.reconstruct(x, c)):
                with pytest.raises(NotImplementedError, match="no encoder"):
                    call()
            return
        z = model.encode(x, c)
        assert z.shape == (8, 3) and torch.isfinite(z).all()
        if model.cfg.prior == "sphere":  # codes on the prior's support
            assert torch.allclose(z.norm(dim=1), torch.ones(8), atol=1e-5)
        rec = model.reconstruct(x, c)
        assert rec.shape == x.shape and rec.abs().max() <= 1

    def test_training_state_beside_the_weights_round_trips(self, kind):
        """train_state() is what state.pt keeps besides the weights (AGE: its adaptive adversary weight);
        load_train_state restores it and ignores what it does not know."""
        adaptive = GameConfig(adaptive_adversary=True, adversary_weight=0.5)
        model = build(kind, adaptive if model_class(kind).age_game else None)
        model.set_lr_factor(0.5)
        batch = model.prepare_batch(images_u8(model))
        for phase in model.phases():
            phase.loss(batch)
        state = model.train_state()
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        fresh = build(kind, seed=1)
        fresh.load_train_state({**state, "from_a_newer_agelab": torch.zeros(())})
        assert fresh.train_state().keys() == state.keys()
        assert all(torch.equal(fresh.train_state()[k], v) for k, v in state.items())
        if model_class(kind).age_game:
            assert model.lr_factor.item() == 0.5
            w = state["adversary_weight"].item()  # one encoder update's step (+0.001 or -0.019) at lr factor 0.5
            assert min(abs(w - (0.5 + 0.5 * 0.001)), abs(w - (0.5 - 0.5 * 0.019))) < 1e-6
        else:
            assert state == {}

    def test_a_saved_checkpoint_loads_as_the_same_model(self, kind, tmp_path):
        model = build(kind)
        batch = model.prepare_batch(images_u8(model))
        for phase in model.phases():  # move the batch-norm running statistics off their initial values
            phase.loss(batch)
        path = ckpt.save_checkpoint(tmp_path, 7, model, model.cfg.to_dict(), {"step": 7})
        loaded = agelab.load(tmp_path)
        assert type(loaded) is type(model) and loaded.checkpoint_path == path
        assert loaded.cfg.to_dict() == model.cfg.to_dict() == ckpt.load_model_files(path)[0]  # model.json
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        model.eval()
        sd, sd_loaded = model.state_dict(), loaded.state_dict()
        assert sd.keys() == sd_loaded.keys() and all(torch.equal(sd[k], sd_loaded[k]) for k in sd)
        x, c = model.split_batch(batch)
        with torch.no_grad():
            z = model.sample_latent(4, generator=torch.Generator().manual_seed(0))
            c4 = None if c is None else c[:4]
            assert torch.equal(loaded.decode(z, c4), model.decode(z, c4))
            if model.has_encoder:
                assert torch.equal(loaded.encode(x, c), model.encode(x, c))


def test_the_pix2pix_l1_weight_is_its_config_s():
    """gen loss = BCE(D(G(z, L) | L), 1) + l1_weight * mean |ab - G(z, L)|, l1_weight from the Pix2PixConfig
    (pix2pix's 100 by default): on the same weights, batch and draws (z, dropout) a weight of 3 gives the same
    adversarial and L1 terms and a loss (100 - 3) * L1 lower."""
    assert Pix2PixConfig().l1_weight == 100.0
    paper, light = build("pix2pix"), build("pix2pix", Pix2PixConfig(l1_weight=3.0))  # the same initial weights
    batch = paper.prepare_batch(images_u8(paper))
    torch.manual_seed(1)
    loss_paper, logs_paper = paper.generator_loss(batch)
    torch.manual_seed(1)
    loss_light, logs_light = light.generator_loss(batch)
    adv, l1 = logs_light["adv"], logs_light["l1"]
    assert torch.equal(logs_paper["adv"], adv) and torch.equal(logs_paper["l1"], l1) and l1 > 0
    assert loss_light.item() == pytest.approx((adv + 3.0 * l1).item(), rel=1e-6)
    assert loss_paper.item() == pytest.approx((adv + 100.0 * l1).item(), rel=1e-6)
    assert (loss_paper - loss_light).item() == pytest.approx(97.0 * l1.item(), rel=1e-5)


@pytest.mark.parametrize("kind", [k for k in MODEL_TYPES if not model_class(k).conditional])
def test_the_authors_nets_are_built_saved_and_loaded_for_every_dcgan_type_model(kind, tmp_path):
    """--nets authors reaches every network of the DCGAN type; model.json says so and a checkpoint loads with them."""
    model = build(kind, nets="authors")
    styles = {m.style for m in model.modules() if hasattr(m, "style")}
    assert styles == {"authors"}
    assert "nets" not in build(kind).cfg.to_dict()  # the default style keeps older model.json files equal
    batch = model.prepare_batch(images_u8(model))
    for phase in model.phases():
        assert math.isfinite(phase.loss(batch)[0].item())
    ckpt.save_checkpoint(tmp_path, 3, model, model.cfg.to_dict(), {"step": 3})
    loaded = agelab.load(tmp_path)
    assert loaded.cfg.nets == "authors" == ckpt.load_model_files(loaded.checkpoint_path)[0]["nets"]
    model.eval()
    with torch.no_grad():
        z = model.sample_latent(4, generator=torch.Generator().manual_seed(0))
        assert torch.equal(loaded.decode(z), model.decode(z))


def test_the_authors_nets_are_refused_for_the_colorization_models(tmp_path):
    for kind in COLORIZATION_MODELS:
        with pytest.raises(ConfigError, match="nets"):
            TrainConfig(model=kind, dataset="cars", nets="authors", out_dir=str(tmp_path)).validate()
