"""Pillow image conversion shared by the loaders, ``agelab colorize`` and the demo server.

Images in modes other than RGB/L are converted by :func:`plain`: RGBA/LA/transparent palette
images are composited onto white, CMYK and YCbCr are converted to RGB, 16-bit grayscale
('I;16', 'I') is scaled from 0..65535 to 0..255. :func:`cover` resizes so an image covers a
target size and center-crops it; :func:`draft` lets libjpeg decode large JPEGs at a reduced scale.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC  # Pillow's resize is antialiased when downscaling
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def _white(im: Image.Image) -> Image.Image:
    """Composite an image with alpha onto white; returns RGB."""
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def plain(im: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 'L' (grayscale sources) or 'RGB' (everything else)."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode == "P":
        if "transparency" in im.info:
            return _white(im)
        return im.convert("RGB")
    if mode in ("1",):
        return im.convert("L")
    if mode in ("LA", "La"):
        return _white(im).convert("L")
    if mode in ("RGBA", "RGBa", "PA"):
        return _white(im)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PNG/TIFF): Pillow's convert('L') would clip at 255; scale instead.
        arr = np.asarray(im).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if np.nanmax(arr, initial=0.0) <= 1.0:  # float images in [0, 1]
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(plain(im).convert("RGB"))


def cover(im: Image.Image, height: int, width: int) -> Image.Image:
    """Resize so the image covers height x width (aspect kept), then center-crop to it."""
    iw, ih = im.size
    scale = max(width / iw, height / ih)
    nw, nh = max(width, round(iw * scale)), max(height, round(ih * scale))
    if (nw, nh) != (iw, ih):
        im = im.resize((nw, nh), RESAMPLE)
    left, top = (nw - width) // 2, (nh - height) // 2
    return im.crop((left, top, left + width, top + height))


def draft(im: Image.Image, height: int, width: int) -> None:
    """Let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale when that still covers the target
    (in either orientation, since EXIF rotation may swap the sides)."""
    if im.format != "JPEG":
        return
    iw, ih = im.size
    scale = max(width / iw, height / ih, width / ih, height / iw)
    if scale < 0.5:
        im.draft(None, (math.ceil(iw * scale), math.ceil(ih * scale)))


def exact_rgb(im: Image.Image) -> np.ndarray:
    """(H, W, 3) RGB at the image's own size (a decoder ``convert`` for fixed-size datasets)."""
    return _rgb(im)


def cover_rgb(im: Image.Image, height: int, width: int) -> np.ndarray:
    """(height, width, 3) RGB: drafted, converted, resized to cover and center-cropped."""
    draft(im, height, width)
    return np.asarray(cover(plain(im).convert("RGB"), height, width))


def open_image(src) -> Image.Image:
    """Open a Path, bytes or a callable returning bytes (an archive member) with Pillow."""
    if isinstance(src, Path):
        if src.is_symlink() and not src.exists():
            raise FileNotFoundError(f"dangling symbolic link (to {os.readlink(src)})")
        return Image.open(src)
    if not isinstance(src, (bytes, bytearray)):
        src = src()
    return Image.open(io.BytesIO(src))
