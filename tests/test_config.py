"""TrainConfig: validation names the option, presets, JSON round trip."""

from __future__ import annotations

import json

import pytest

from agelab.config import PRESETS, ConfigError, TrainConfig, build_config


def test_defaults_are_valid_and_roundtrip_through_json():
    cfg = TrainConfig().validate()
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.replace(lam=5.0).lam == 5.0 and cfg.lam == 1000.0  # frozen: replace makes a copy


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_presets_then_overrides():
    cfg = build_config("mnist", iterations=7, lam=None)
    assert (cfg.dataset, cfg.latent_dim, cfg.iterations, cfg.enc_latent_recon) == ("mnist", 10, 7, 1000.0)
    paper = build_config("mnist-paper")
    assert (paper.mu, paper.lam, paper.enc_latent_recon, paper.gen_image_recon) == (10.0, 1000.0, 0.0, 0.0)
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


def test_knn_k_larger_than_prior_samples_is_rejected():
    with pytest.raises(ConfigError, match="--knn"):
        TrainConfig(divergence="knn", knn_k=5, knn_prior_samples=2, batch_size=16).validate()
