"""Colorization and colour transfer with a trained colorization model (conditional AGE or pix2pix; paper 3.2).

    >>> import agelab
    >>> from agelab.colorize import read_images, colorize, transfer
    >>> model = agelab.load("runs/00003-cars-cage")
    >>> gray = read_images("photo.jpg", model.cfg.image_size)     # uint8 (1, 3, S, S); only its L is used
    >>> rgb = colorize(model, gray, k=8, seed=0)                   # (1, 8, 3, S, S) RGB in [0, 1]
    >>> out = transfer(model, read_images("red_car.jpg", 64), gray)  # g(e(ab_1 | L_1) | L_2), (1, 3, S, S)

Every function takes uint8 RGB images (N, 3, S, S) at the model's size
(:func:`read_images` brings any image file to that) and returns RGB in [0, 1].
Only the lightness L of an input to colorize is used; colorizations are
``g(z | L)`` for K latent samples z ~ prior, shown next to the gray input.
The trainer's grids and final outputs for colorization runs are written here too
(:func:`write_colorization_grids`, :func:`finish_colorization_run`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from agelab.colorspace import gray_rgb, lab_normalised_to_rgb, uint8_to_lab
from agelab.data import to_uint8
from agelab.errors import first_line

BATCH = 128  # images per generator call


class ColorizeError(ValueError):
    """A colorization request cannot be served (wrong model type, unreadable image); one-line message."""


def check_colorization_model(model, need_encoder: bool = False) -> None:
    kind = model.kind
    if not model.conditional:
        raise ColorizeError(f"this is an unconditional model ({kind!r}); colorization needs a run trained with "
                            f"--model cage (or pix2pix)")
    if need_encoder and not model.has_encoder:
        raise ColorizeError(f"colour transfer encodes the source's colours with the AGE encoder; a {kind} model has "
                            "none (use a --model cage run)")


# ---- reading images ---------------------------------------------------------------------
def read_image(path: str | Path, size: int) -> Tensor:
    """Any image file -> uint8 RGB (3, size, size): EXIF-rotated, alpha onto white, gray repeated to RGB,
    resized so it covers size x size, center-cropped (as the Stanford Cars loader does)."""
    from agelab.data.images import cover, plain

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im = cover(plain(im).convert("RGB"), size, size)
            arr = torch.from_numpy(np.asarray(im).copy())  # (S, S, 3)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ColorizeError(f"{path}: cannot read image ({first_line(exc)})") from None
    return arr.permute(2, 0, 1).contiguous()


def image_files(folder: Path) -> list[Path]:
    from agelab.data.images import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_images(path: str | Path, size: int, limit: int | None = None) -> Tensor:
    """An image file or a folder of images (sorted by name, at most ``limit``) -> uint8 RGB (N, 3, size, size)."""
    p = Path(path)
    if p.is_dir():
        files = image_files(p)[:limit] if limit else image_files(p)
        if not files:
            raise ColorizeError(f"{p}: no image files in this folder")
    elif p.is_file():
        files = [p]
    else:
        raise ColorizeError(f"{p}: no such image file or folder")
    return torch.stack([read_image(f, size) for f in files])


# ---- colorizing -------------------------------------------------------------------------
def latent_codes(model, n: int, k: int, seed: int = 0, shared: bool = True) -> Tensor:
    """(n, k, M) codes from the prior, from their own RNG: the same k for every image (``shared``,
    so column j of a grid is one z) or independent ones."""
    gen = torch.Generator().manual_seed(seed)
    z = model.prior.sample(k if shared else n * k, generator=gen)  # CPU generator, then to the model's device
    z = z.unsqueeze(0).expand(n, k, -1) if shared else z.view(n, k, -1)
    return z.to(model.device)


@torch.no_grad()
def colorize_ab(model, lightness: Tensor, z: Tensor) -> Tensor:
    """ab (N, K, 2, S, S) of g(z_nk | L_n); lightness (N, 1, S, S), z (N, K, M)."""
    n, k, m = z.shape
    lrep = lightness.unsqueeze(1).expand(n, k, *lightness.shape[1:]).reshape(n * k, *lightness.shape[1:])
    zf = z.reshape(n * k, m)
    ab = torch.cat([model.decode(zf[i:i + BATCH], lrep[i:i + BATCH]) for i in range(0, n * k, BATCH)])
    return ab.view(n, k, *ab.shape[1:]).float()


def _eval(model):
    was = model.training
    model.eval()
    return was


@torch.no_grad()
def colorize(model, images_u8: Tensor, k: int = 8, seed: int = 0, shared: bool = True) -> Tensor:
    """K colorizations g(z | L) of each image's lightness: RGB in [0, 1], (N, K, 3, S, S)."""
    check_colorization_model(model)
    was = _eval(model)
    try:
        lightness, _ = uint8_to_lab(images_u8.to(model.device))
        ab = colorize_ab(model, lightness, latent_codes(model, len(images_u8), k, seed, shared))
        n = len(images_u8)
        lrep = lightness.unsqueeze(1).expand(n, k, *lightness.shape[1:]).reshape(n * k, *lightness.shape[1:])
        return lab_normalised_to_rgb(lrep, ab.flatten(0, 1)).view(n, k, 3, *ab.shape[-2:])
    finally:
        model.train(was)


@torch.no_grad()
def transfer(model, source_u8: Tensor, target_u8: Tensor) -> Tensor:
    """Colour transfer (paper fig. 4b): g(e(ab_s | L_s) | L_t), RGB in [0, 1] (N, 3, S, S).

    Sources and targets are paired row by row; a single source is used for every target.
    """
    check_colorization_model(model, need_encoder=True)
    if len(source_u8) == 1 and len(target_u8) > 1:
        source_u8 = source_u8.expand(len(target_u8), -1, -1, -1)
    if len(source_u8) != len(target_u8):
        raise ColorizeError(f"{len(source_u8)} source and {len(target_u8)} target images: give one source, or as "
                            "many as targets")
    was = _eval(model)
    try:
        l_s, ab_s = uint8_to_lab(source_u8.to(model.device))
        l_t, _ = uint8_to_lab(target_u8.to(model.device))
        z = model.encode(ab_s, l_s)  # (N, M): the source's colour scheme
        return lab_normalised_to_rgb(l_t, model.decode(z, l_t))
    finally:
        model.train(was)


# ---- grids ------------------------------------------------------------------------------
def _signed(rgb01: Tensor) -> Tensor:
    return rgb01 * 2 - 1  # [0, 1] -> [-1, 1], what agelab.sampling.save_grid takes


@torch.no_grad()
def colorization_rows(model, images_u8: Tensor, k: int = 8, seed: int = 0) -> Tensor:
    """One row per input: its gray version, then K colorizations; (N * (K + 1), 3, S, S) in [-1, 1]."""
    rgb = colorize(model, images_u8, k, seed)  # (N, K, 3, S, S)
    lightness, _ = uint8_to_lab(images_u8.to(model.device))
    gray = gray_rgb(lightness).unsqueeze(1)  # (N, 1, 3, S, S)
    return _signed(torch.cat([gray, rgb], dim=1).flatten(0, 1))


@torch.no_grad()
def transfer_rows(model, source_u8: Tensor, target_u8: Tensor) -> Tensor:
    """One row per pair: source, target in gray, transfer result, target's own colours; (4N, 3, S, S) in [-1, 1]."""
    out = transfer(model, source_u8, target_u8)  # (N, 3, S, S)
    source_u8 = source_u8.expand(len(out), -1, -1, -1) if len(source_u8) == 1 else source_u8
    src = source_u8.to(out.device).float() / 255
    tgt = target_u8.to(out.device).float() / 255
    gray = gray_rgb(uint8_to_lab(target_u8.to(out.device))[0])
    return _signed(torch.stack([src, gray, out, tgt], dim=1).flatten(0, 1))


def save_colorization_grid(model, images_u8: Tensor, out: str | Path, k: int = 8, seed: int = 0) -> Path:
    from agelab.sampling import save_grid

    return save_grid(colorization_rows(model, images_u8, k, seed), out, nrow=k + 1)


def save_transfer_grid(model, source_u8: Tensor, target_u8: Tensor, out: str | Path) -> Path:
    from agelab.sampling import save_grid

    return save_grid(transfer_rows(model, source_u8, target_u8), out, nrow=4)


# ---- the trainer's outputs for colorization runs ---------------------------------------
@torch.no_grad()
def write_colorization_grids(model, folder: Path, step: int, fixed_test: Tensor) -> None:
    """Periodic grid: 8 held-out images (given as float RGB in [-1, 1]), gray then 8 colorizations each."""
    folder.mkdir(exist_ok=True)
    save_colorization_grid(model, to_uint8(fixed_test[:8]), folder / f"colorizations-{step:07d}.png", k=8, seed=0)


def transfer_pairs(n_images: int, pairs: int = 8) -> tuple[list[int], list[int]]:
    """Fixed (source, target) indices into a held-out set: the first ``pairs`` images as sources, the
    next ``pairs`` as targets (fewer for tiny sets)."""
    pairs = min(pairs, n_images // 2)
    return list(range(pairs)), list(range(pairs, 2 * pairs))


@torch.no_grad()
def finish_colorization_run(model, run_dir: Path, test_data, step: int, device: torch.device,
                            metric_images: int = 512, k: int = 8) -> dict:
    """colorizations.png (16 held-out inputs x 8), transfer.png (conditional AGE), colorization metrics on up
    to ``metric_images`` held-out images in summary.json, and report.html."""
    from agelab.metrics.colorization import evaluate_colorization

    model.eval()
    images = test_data.images
    save_colorization_grid(model, images[:16], run_dir / "colorizations.png", k=k, seed=0)
    if model.has_encoder:  # colour transfer encodes the source's colours
        src, tgt = transfer_pairs(len(images))
        if src:
            save_transfer_grid(model, images[src], images[tgt], run_dir / "transfer.png")
    metrics = evaluate_colorization(model, images[:metric_images], k=k, seed=0)
    summary = {"step": step, "test_images": len(images), "model": model.cfg.model, "colorization": metrics,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    write_colorization_report(run_dir)
    return summary


def write_colorization_report(run_dir: Path) -> Path:
    """report.html of a colorization run: metrics, colorizations, colour transfer, curves, config."""
    import html

    from agelab.report import _img, plot_curves

    from agelab.runs import Run

    run = Run(Path(run_dir))
    config, summary = run.config().to_dict(), run.summary()
    curves = plot_curves(run_dir, run_dir / "curves.png")
    metrics = summary.get("colorization", {})
    rows = [("iterations", summary.get("step", "?")), ("model", summary.get("model", "?"))]
    rows += [(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()]
    table = "".join(f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>" for a, b in rows)
    cfg_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(repr(v))}</td></tr>"
                       for k, v in sorted(config.items()))
    transfer_html = (f"<h2>Colour transfer (source | target gray | g(e(source) | L_target) | target)</h2>"
                     f"{_img(run_dir / 'transfer.png')}" if (run_dir / "transfer.png").exists() else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>agelab run {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} img{{image-rendering:pixelated;max-width:100%}}
td{{padding:2px 10px;border-bottom:1px solid #ddd}}</style></head><body>
<h1>agelab colorization run {html.escape(run_dir.name)}</h1>
<h2>Held-out colorization metrics (Lab units; docs/results.md)</h2><table>{table}</table>
<h2>Held-out colorizations (gray input, then g(z_j | L) for 8 codes z_j, the same in every row)</h2>
{_img(run_dir / "colorizations.png")}
{transfer_html}
<h2>Training curves</h2>{_img(curves) if curves else "<p>no metrics</p>"}
<h2>Config</h2><table>{cfg_rows}</table></body></html>"""
    out = run_dir / "report.html"
    out.write_text(page)
    return out


__all__ = ["ColorizeError", "colorization_rows", "colorize", "read_images", "save_colorization_grid",
           "save_transfer_grid", "transfer", "transfer_rows"]
