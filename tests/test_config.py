"""TrainConfig: validation names the option, presets, JSON round trip."""

from __future__ import annotations

import json

import pytest

from agelab.config import PAPER, PRESETS, RECIPES, SWAPPED, ConfigError, TrainConfig, build_config


def test_defaults_are_valid_and_roundtrip_through_json():
    cfg = TrainConfig().validate()
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.replace(lam=5.0).lam == 5.0 and cfg.lam == 1000.0  # frozen: replace makes a copy


def test_the_default_game_is_the_paper_adaptive_recipe_and_recipes_override_presets():
    defaults = TrainConfig().to_dict()
    assert all(defaults[k] == v for k, v in RECIPES["paper-adaptive"].items()), "the defaults are paper-adaptive"
    assert {k: v for k, v in defaults.items() if k in PAPER and defaults[k] != PAPER[k]} == {"adaptive_adversary": True}
    assert build_config("digits").adaptive_adversary and not build_config("digits", "paper").adaptive_adversary
    assert set(RECIPES) == {"paper", "paper-adaptive", "swapped"}
    adaptive = build_config("mnist", "paper-adaptive")
    assert adaptive.adaptive_adversary and adaptive.adaptive_threshold == 1.3 and adaptive.game_scale == "mean"
    swapped_mnist = build_config("mnist-paper", "swapped", iterations=7)
    assert all(getattr(swapped_mnist, k) == v for k, v in SWAPPED.items()) and swapped_mnist.iterations == 7
    paper_mnist = build_config("mnist", "paper", mu=3.0)  # options still override the recipe
    assert (paper_mnist.mu, paper_mnist.lam, paper_mnist.enc_latent_recon, paper_mnist.game_scale) == (3.0, 1000.0,
                                                                                                        0.0, "mean")
    with pytest.raises(ConfigError, match="^--recipe: unknown recipe"):
        build_config("mnist", "swap")
    with pytest.raises(ConfigError, match="--game-scale"):
        TrainConfig(game_scale="max").validate()


def test_a_saved_config_without_the_newer_game_fields_keeps_its_game():
    """What a config.json meant when it was written: eq. 7 summed before --game-scale, no adaptive adversary weight
    before it became the default; today's defaults are the paper's game at the authors' scale with that weight."""
    saved = json.loads(TrainConfig().to_json())
    assert (saved["game_scale"], saved["adaptive_adversary"], saved["adaptive_threshold"]) == ("mean", True, 1.3)
    for key in ("game_scale", "adaptive_adversary", "adaptive_threshold", "adversary_weight", "adaptive_floor"):
        del saved[key]
    old = TrainConfig.from_dict(saved)
    assert (old.game_scale, old.adaptive_adversary, old.adaptive_threshold, old.adversary_weight,
            old.adaptive_floor) == ("sum", False, 1.05, 1.0, 0.0)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_presets_then_overrides():
    cfg = build_config("mnist", iterations=7, lam=None)
    assert (cfg.dataset, cfg.latent_dim, cfg.iterations, cfg.lam, cfg.adaptive_adversary) == ("mnist", 10, 7, 1000.0,
                                                                                              True)
    assert build_config("cars-colorization").enc_latent_recon == 1000.0  # the swapped recipe
    assert build_config("fashion-mnist", "swapped").gen_image_recon == 10.0
    assert build_config("digits").mu == 10.0 and build_config("digits").adaptive_adversary  # paper-adaptive
    paper = build_config("mnist-paper")
    assert (paper.mu, paper.lam, paper.enc_latent_recon, paper.gen_image_recon) == (10.0, 1000.0, 0.0, 0.0)
    assert (paper.divergence, paper.game_scale) == ("gaussian_reference", "mean")
    assert build_config(None).iterations == TrainConfig().iterations
    with pytest.raises(ConfigError, match="--preset"):
        build_config("cifar")
    for name, values in PRESETS.items():
        assert set(values) <= set(TrainConfig().to_dict()), name


@pytest.mark.parametrize(
    "change,option",
    [
        ({"dataset": "cifar"}, "--dataset"),
        ({"prior": "uniform"}, "--prior"),
        ({"divergence": "mmd"}, "--divergence"),
        ({"image_size": 48}, "--image-size"),
        ({"latent_dim": 1}, "--latent-dim"),
        ({"lam": -1.0}, "--lam"),
        ({"mu": float("nan")}, "--mu"),
        ({"gen_image_recon": float("inf")}, "--gen-image-recon"),
        ({"lr": 0.0}, "--lr"),
        ({"adaptive_floor": -0.1}, "--adaptive-floor"),
        ({"adaptive_floor": 0.6, "adversary_weight": 0.5}, "--adaptive-floor"),
        ({"beta1": 1.0}, "--beta1"),
        ({"width": 0}, "--width"),
        ({"batch_size": 1}, "--batch-size"),
        ({"iterations": 0}, "--iterations"),
        ({"keep_ckpts": 0}, "--keep-ckpts"),
        ({"divergence": "knn", "knn_k": 8, "batch_size": 8}, "--knn-k"),
        ({"lr_halve_every": -1}, "--lr-halve-every"),
        ({"threads": -2}, "--threads"),
        ({"tag": "a/b"}, "--tag"),
        ({"tag": ".hidden"}, "--tag"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_validation_names_the_bad_option(change, option):
    with pytest.raises(ConfigError, match=option):
        TrainConfig(**change).validate()


def test_the_knn_divergence_turns_the_default_adaptive_weight_off_unless_asked_for():
    """The adaptive weight's threshold needs a fitted-Gaussian divergence: --divergence knn alone switches it off,
    asking for both is a one-line error that says what to do."""
    assert not build_config("mnist", divergence="knn").adaptive_adversary
    assert build_config("mnist", divergence="knn", adaptive_adversary=False).divergence == "knn"
    with pytest.raises(ConfigError, match="^--adaptive-adversary: .*--no-adaptive-adversary"):
        build_config("mnist", divergence="knn", adaptive_adversary=True)
    with pytest.raises(ConfigError, match="^--adaptive-adversary"):
        TrainConfig(divergence="knn").validate()


def test_knn_k_larger_than_prior_samples_is_rejected():
    with pytest.raises(ConfigError, match="--knn"):
        TrainConfig(divergence="knn", knn_k=5, knn_prior_samples=2, batch_size=16).validate()


def _doc_table(path) -> dict[str, dict[str, str]]:
    """{preset: {option: value}} from the first markdown table of docs/presets.md."""
    rows = [line.strip().strip("|").split("|") for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [c.strip().strip("`") for c in rows[0]]
    table: dict[str, dict[str, str]] = {name: {} for name in header[1:]}
    for row in rows[1:]:
        cells = [c.strip().strip("`") for c in row]
        if cells[0] == "option":  # the second table starts
            break
        for name, value in zip(header[1:], cells[1:]):
            table[name][cells[0]] = value
    return table


def test_presets_doc_matches_code():
    from pathlib import Path

    table = _doc_table(Path(__file__).parents[1] / "docs" / "presets.md")
    assert set(table) == set(PRESETS), "docs/presets.md must have a column for every preset"
    for name, values in table.items():
        cfg = build_config(name)
        for option, shown in values.items():
            actual = getattr(cfg, option.replace("-", "_"))
            if isinstance(actual, float):
                assert float(shown) == actual, (name, option)
            else:
                assert shown == str(actual), (name, option)
        for key in PRESETS[name]:  # every value a preset sets is in the table
            assert key.replace("_", "-") in values, (name, key)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name):
    cfg = build_config(name)
    assert cfg.validate() == cfg and TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
