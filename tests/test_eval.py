"""``agelab train-classifier`` and ``agelab eval`` end to end on the embedded digits (tiny settings)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import invoke

TINY_CLASSIFIER = ["--dataset", "digits", "--epochs", "1", "--width", "4", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """scikit-learn's BLAS calls with several threads crawl on a 2-core machine shared with trainings."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> Path:
    """A SmallCNN (width 4) trained for one epoch (23 steps) on digits, through the CLI. Read-only."""
    from agelab.cli import main

    out = tmp_path_factory.mktemp("classifier") / "digits.safetensors"
    assert main(["train-classifier", *TINY_CLASSIFIER, "--out", str(out)]) == 0
    return out


def test_train_classifier_writes_a_loadable_file_with_its_description(digits_classifier):
    from agelab.nets.classifier import classifier_info, load_classifier, sidecar_path

    model = load_classifier(digits_classifier)
    assert model.meta["width"] == 4 and model.num_classes == 10 and model.image_size == 32
    info = classifier_info(digits_classifier)
    side = json.loads(sidecar_path(digits_classifier).read_text())
    for d in (info, side):
        assert d["dataset"] == "digits" and d["image_size"] == 32 and 0.0 <= d["test_accuracy"] <= 1.0
        assert d["test_images"] == 299 and d["recipe"]["epochs"] == 1 and d["recipe"]["width"] == 4
    assert len(side["sha256"]) == 64


def test_train_classifier_default_output_is_the_per_user_cache(capsys, monkeypatch, tmp_path):
    from agelab.nets.classifier import default_classifier_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = invoke(["train-classifier", *TINY_CLASSIFIER, "--batch-size", "500"], capsys)
    assert code == 0, err
    expected = default_classifier_path("digits", 32)
    assert expected == tmp_path / "cache" / "agelab" / "classifiers" / "digits-32px.safetensors"
    assert expected.is_file() and f"wrote {expected}" in out and "test accuracy" in out


def test_eval_writes_eval_json_and_html(run_copy, digits_classifier, capsys):
    code, out, err = invoke(["eval", run_copy, "--classifier", digits_classifier, "--n-samples", "64",
                             "--no-progress"], capsys)
    assert code == 0, err
    result = json.loads((run_copy / "eval.json").read_text())
    assert result["dataset"] == "digits" and result["step"] == 4 and result["n_samples"] == 64
    assert result["extractor"]["name"].startswith("classifier:digits:") and result["extractor"]["dim"] == 16
    metrics = result["metrics"]
    expected = {"fid", "kid", "inception_score", "precision", "recall", "recon_l1", "recon_mse", "recon_psnr",
                "recon_ssim", "latent_cycle", "recon_domain_accuracy", "recon_label_accuracy",
                "classifier_test_accuracy", "probe_code_all_labels", "probe_code_1000_labels"}
    assert expected <= set(metrics), expected - set(metrics)
    for name in ("fid", "kid", "inception_score", "precision", "recall"):
        m = metrics[name]
        assert m["extractor"] == result["extractor"]["name"] and m["n_fake"] == 64 and "how" in m, name
        assert m["floor"]["n_fake"] == 64 and m["floor"]["fake"].startswith("train split"), name
    assert metrics["fid"]["n_real"] == 299 and metrics["fid"]["real"] == "test split"
    assert metrics["recon_l1"]["split"] == "test" and metrics["recon_l1"]["n"] == 299
    probe = metrics["probe_code_1000_labels"]
    assert probe["per_class"] == 100 and probe["n_train"] == 1000 and probe["n_test"] == 299
    assert probe["floor"]["features"] == "raw pixels" and metrics["probe_code_all_labels"]["n_train"] == 1498
    assert result["skipped"] == {}
    page = (run_copy / "eval.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # samples, reconstructions, interpolations, curves
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline
    for name in expected:
        assert f"<b>{name}</b>" in page
    assert f"wrote {run_copy / 'eval.json'}" in out and re.search(r"fid\s+[\d.]+\s+\(floor [\d.]+\)", out)
    assert "torchvision" not in sys.modules and "torch_fidelity" not in sys.modules


def test_eval_hidden_probe_features(run_copy, digits_classifier):
    from agelab.evaluate import evaluate_run

    result = evaluate_run(run_copy, classifier=digits_classifier, n_samples=16, probe_features="hidden",
                          progress=False, write=False)
    probe = result["metrics"]["probe_hidden_1000_labels"]
    assert probe["dim"] == (4 + 8 + 16) * 16 and "hidden" in probe["features"]
    assert not (run_copy / "eval.json").exists()


def test_real_features_stopped_midway_continue_from_their_partial_files(tmp_path, monkeypatch):
    """Hours of Inception on a CPU are not lost to a kill: finished chunks are kept and read on the next call."""
    from agelab import evaluate
    from agelab.metrics.features import FeatureExtractor

    class Stopping(FeatureExtractor):  # a stable extractor that can be told to fail after some images
        name, num_features, stable_name = "test-extractor:0123abcd", 3, True

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
            self.budget, self.seen = None, 0

        def _embed(self, x):
            if self.budget is not None and self.seen + len(x) > self.budget:
                raise KeyboardInterrupt
            self.seen += len(x)
            return x.float().flatten(1).mean(1, keepdim=True) * self.w, None

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(evaluate, "REAL_STATS_CHUNK", 10)
    images = torch.randint(0, 256, (25, 1, 4, 4), dtype=torch.uint8)
    kw = dict(dataset="digits", split="train", image_size=4, batch_size=5)
    ext = Stopping()
    ext.budget = 15  # stopped inside the second chunk
    with pytest.raises(KeyboardInterrupt):
        evaluate.real_features(ext, images, **kw)
    ext.budget, ext.seen, log = None, 0, []
    feats, _ = evaluate.real_features(ext, images, **kw, log=log)
    assert ext.seen == 15 and log[0]["computed"] == 15 and log[0]["resumed_from_partial"] == 10
    assert torch.allclose(feats, images.float().flatten(1).mean(1, keepdim=True) * ext.w)
    assert [p.name for p in (tmp_path / "cache" / "agelab" / "real-stats").iterdir()] == [Path(log[0]["cache"]).name]
    assert evaluate._speed(log)["images"] == 15


def test_eval_reads_cached_real_features_the_second_time(run_copy, digits_classifier, monkeypatch):
    """Real-image features (test split, floor subset) are computed once per extractor, then read from the cache."""
    import numpy as np

    from agelab.evaluate import evaluate_run
    from agelab.metrics.features import ClassifierExtractor

    ran: list[str] = []
    extract = ClassifierExtractor.extract

    def counting(self, images, batch_size=100, progress=False, desc="features"):
        ran.append(f"{desc}:{len(images)}")
        return extract(self, images, batch_size, progress, desc)

    monkeypatch.setattr(ClassifierExtractor, "extract", counting)
    kw = dict(classifier=digits_classifier, n_samples=16, progress=False, write=False)
    first = evaluate_run(run_copy, **kw)
    assert ran == ["features: test split:299", "features: samples:16",
                   "features: train split (16 random images, seed 0):16"]
    sets = first["extractor"]["feature_sets"]
    assert [s["from_cache"] for s in sets] == [False, False, False] and first["extractor"]["speed"]["images"] == 331
    test_cache = Path(sets[0]["cache"])
    assert test_cache.is_file() and sets[1]["cache"] is None  # samples are never cached
    assert test_cache.parent.name == "real-stats" and test_cache.name.startswith("digits-test-32px-n299-classifier")
    with np.load(test_cache) as z:
        assert z["features"].shape == (299, 16) and z["sigma"].shape == (16, 16)
        assert np.allclose(z["mu"], z["features"].astype(np.float64).mean(0))
        assert json.loads(str(z["meta"]))["extractor"] == first["extractor"]["name"]

    ran.clear()
    second = evaluate_run(run_copy, **kw)
    assert ran == ["features: samples:16"]  # both real sets came from the cache
    assert [s["from_cache"] for s in second["extractor"]["feature_sets"]] == [True, False, True]
    for name in ("fid", "kid", "precision", "recall"):
        assert second["metrics"][name]["value"] == first["metrics"][name]["value"], name
        assert second["metrics"][name]["floor"]["value"] == first["metrics"][name]["floor"]["value"], name

    ran.clear()
    evaluate_run(run_copy, **dict(kw, seed=1))  # other floor images: that set is computed, the test split is not
    assert ran == ["features: samples:16", "features: train split (16 random images, seed 1):16"]


def test_eval_without_a_classifier_says_how_to_get_one(run_copy, capsys):
    code, _, err = invoke(["eval", run_copy, "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "agelab train-classifier --dataset digits" in err and "--classifier" in err
    assert not (run_copy / "eval.json").exists()


def test_eval_inception_without_weights_is_one_clear_line(run_copy, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("AGELAB_INCEPTION_WEIGHTS", raising=False)
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    code, _, err = invoke(["eval", run_copy, "--features", "inception", "--inception-weights", missing,
                           "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "pt_inception-2015-12-05-6726825d.pth" in err and str(missing) in err
    assert "--features classifier" in err


def test_eval_rejects_a_classifier_of_another_dataset(run_copy, capsys, tmp_path):
    from agelab.nets.classifier import SmallCNN, save_classifier

    other = save_classifier(SmallCNN(1, 10, width=4), tmp_path / "mnist.safetensors", {"dataset": "mnist"})
    code, _, err = invoke(["eval", run_copy, "--classifier", other, "--no-progress"], capsys)
    assert code == 2 and "trained on mnist" in err and err.count("\n") == 1


def test_eval_of_a_folder_that_is_no_run(tmp_path, capsys):
    code, _, err = invoke(["eval", tmp_path, "--no-progress"], capsys)
    assert code == 2 and "not a run folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("command, options", [
    ("eval", ["RUN", "--features", "--classifier", "--inception-weights", "--n-samples", "--data-root",
              "--probe-features", "--seed", "--batch-size", "--device", "--no-progress"]),
    ("train-classifier", ["--dataset", "--data-root", "--out", "--epochs", "--width", "--batch-size",
                          "--image-size", "--seed", "--device", "--no-download", "--no-progress"]),
])
def test_help_lists_every_option(command, options, capsys):
    code, stdout, err = invoke([command, "--help"], capsys)
    assert code == 0 and err == ""
    body = stdout.split("\n\n", 1)[1]
    for option in options:
        assert re.search(rf"(^|\s){re.escape(option)}(\s|,|$)", body, re.M), f"{option} missing"


def test_train_classifier_bad_input_is_one_line(capsys, tmp_path):
    code, _, err = invoke(["train-classifier", "--dataset", "digits", "--out", tmp_path / "x.pt"], capsys)
    assert code == 2 and "safetensors" in err and err.count("\n") == 1
    code, _, err = invoke(["train-classifier", "--dataset", "nope"], capsys)
    assert code == 2 and "nope" in err
    code, _, err = invoke(["train-classifier", "--dataset", "mnist", "--data-root", tmp_path, "--no-download",
                           "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1


def test_real_floor_script_reports_each_prefix_from_one_feature_pass(digits_classifier, tmp_path, capsys):
    """scripts/real_floor.py --also: the floors of the first N training images come from the largest set's features,
    each equal to the floor computed for N on its own (the same seed-0 permutation prefix), and FID falls as N grows."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "real_floor.py"
    spec = importlib.util.spec_from_file_location("real_floor", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--dataset", "digits", "--features", "classifier", "--classifier", str(digits_classifier), "--no-progress"]
    assert script.main([*common, "--n-train", "1200", "--also", "100", "400", "--json", str(tmp_path / "all.json")]) == 0
    assert script.main([*common, "--n-train", "100", "--json", str(tmp_path / "100.json")]) == 0
    whole = json.loads((tmp_path / "all.json").read_text())
    alone = json.loads((tmp_path / "100.json").read_text())
    assert [s["n_train"] for s in whole["subsets"]] == [100, 400] and whole["n_train"] == 1200
    assert whole["subsets"][0]["fid"] == pytest.approx(alone["fid"], rel=1e-6)
    assert whole["subsets"][0]["fid"] > whole["subsets"][1]["fid"] > whole["fid"] > 0
    assert "the first 400 of them: FID" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main([*common, "--n-train", "100", "--also", "500"])
