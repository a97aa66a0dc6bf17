"""``agelab serve RUN``: one local web page to play with a trained run.

    >>> from agelab.serve import create_app, serve
    >>> app = create_app("runs/00001-mnist-age")       # a FastAPI app; the model is loaded once, here
    >>> serve("runs/00001-mnist-age", port=7860)        # uvicorn on http://127.0.0.1:7860/

The page (``agelab/serve_static/``: plain HTML, CSS and JavaScript, nothing fetched from
elsewhere) talks to a small JSON API; every image goes back and forth as a PNG:

==========================  ==================================================================
``GET  /api/info``          the run: model type, image size, latent size, test split, limits
``POST /api/sample``        JSON ``{"seed", "n"}`` -> n samples g(z), z ~ prior (seeded)
``GET  /api/sample.png``    the same as one PNG grid (``?seed=&n=&nrow=``)
``GET  /api/test-images``   thumbnails of the run's test split (``?start=&count=``)
``GET  /api/test-image/I``  test image I as PNG
``POST /api/reconstruct``   form: ``image`` (upload) or ``index`` -> x, g(e(x)), L1/MSE/PSNR
``POST /api/interpolate``   form: ``image_a``/``index_a``, ``image_b``/``index_b``, ``steps`` -> slerp frames
``POST /api/colorize``      form: ``image``/``index``, ``k``, ``seed`` -> gray input, K colorizations, their z
``POST /api/colorize-z``    form: ``image``/``index``, ``z`` (M numbers) -> g(z / |z| | L)
``POST /api/transfer``      form: ``source``/``source_index``, ``target``/``target_index`` -> g(e(ab_s | L_s) | L_t)
==========================  ==================================================================

Sample, reconstruct and interpolate serve unconditional (AGE) runs; colorize, colorize-z and
transfer colorization runs (cage; pix2pix has no encoder, so no transfer). Errors are JSON
``{"detail": "one line"}`` with a 4xx status: 400 (bad input: not an image, a bad index, both
or neither of upload/index), 413 (an upload over the size limit, or an image over the pixel
limit: a decompression bomb), 409 (a tab this run's model type cannot do), 422 (a malformed
request: bad JSON, a field of the wrong type or out of range), 503 (the test split could not
be loaded).

Uploads are read into memory (the multipart parser spills parts over 1 MB to the system's
temporary folder and deletes them after the request); nothing is written anywhere else.
Only PNG, JPEG, GIF, BMP, WebP and TIFF are decoded (never EPS or PDF, which Pillow hands to
Ghostscript), and an image's size is checked from its header before its pixels are decoded.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from fastapi import Body, FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

import agelab
from agelab.colorize import ColorizeError, check_colorization_model, colorize, colorize_ab, latent_codes, transfer
from agelab.colorspace import gray_rgb, lab_normalised_to_rgb, uint8_to_lab
from agelab.data import load_dataset, to_float, to_uint8
from agelab.errors import first_line
from agelab.sampling import interpolation_rows, make_grid, reconstruction_errors, sample_images
from agelab.trainer import SEED_MAX

STATIC = Path(__file__).resolve().parent / "serve_static"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per uploaded image
MAX_IMAGE_PIXELS = 4096 * 4096  # width * height of an upload, read from its header before decoding
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # what Image.open may try; no EPS/PDF (Ghostscript)
MAX_SAMPLES, MAX_K, MAX_STEPS, MAX_THUMBS = 64, 16, 32, 64
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class ServeError(ValueError):
    """The demo cannot start (bad option); one-line message."""


# ---- images <-> PNG ----------------------------------------------------------------------
def png_bytes(image_u8: Tensor) -> bytes:
    """uint8 (C, H, W), C in {1, 3} -> PNG bytes."""
    arr = image_u8.detach().cpu().permute(1, 2, 0).numpy()
    arr = arr[..., 0] if arr.shape[2] == 1 else arr
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def data_url(image_u8: Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image_u8)).decode("ascii")


def _rgb01_u8(rgb01: Tensor) -> Tensor:
    return (rgb01.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n / 1024:.3g} KB"


def decode_image(data: bytes, size: int, channels: int, max_pixels: int = MAX_IMAGE_PIXELS,
                 name: str = "the upload") -> Tensor:
    """Uploaded bytes -> uint8 (channels, size, size), as the colorize command reads files: EXIF-rotated,
    alpha onto white, resized to cover size x size and center-cropped.

    Raises HTTPException 400 (not an image of an allowed format, or a corrupt one) or 413 (more than
    ``max_pixels`` pixels, checked from the header before any pixel is decoded: decompression bombs).
    """
    from agelab.data.images import cover, draft, plain

    if not data:
        raise HTTPException(400, f"{name} is empty")
    try:
        im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(413, f"{name} declares an enormous image: refused as a decompression bomb") from None
    except UnidentifiedImageError:
        raise HTTPException(400, f"{name} is not an image this demo reads (PNG, JPEG, GIF, BMP, WebP or "
                            "TIFF)") from None
    except Exception as exc:  # noqa: BLE001 - whatever a malformed file makes a decoder raise is bad input
        raise HTTPException(400, f"{name} is not a readable image ({first_line(exc)})") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1:
            raise HTTPException(400, f"{name} has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise HTTPException(413, f"{name} is {w}x{h} pixels, over the limit of {max_pixels:,} pixels "
                                "(refused as a possible decompression bomb)")
        try:
            draft(im, size, size)
            im = ImageOps.exif_transpose(im)
            im = plain(im).convert("RGB" if channels == 3 else "L")
            im = cover(im, size, size)
            arr = np.asarray(im).copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise HTTPException(413, f"{name}: refused as a decompression bomb") from None
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data, malformed EXIF, ...
            raise HTTPException(400, f"{name} is not a readable image ({first_line(exc)})") from None
    t = torch.from_numpy(arr)
    return (t.permute(2, 0, 1) if t.ndim == 3 else t.unsqueeze(0)).contiguous()


# ---- the demo: one model, its test split ---------------------------------------------------
class Demo:
    """A loaded run: the model (once), a lock around it, and its test split (loaded in the background)."""

    def __init__(self, run: str | Path, data_root: str | None = None, device: str = "cpu",
                 test_split: bool = True, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 max_pixels: int = MAX_IMAGE_PIXELS):
        from agelab.runs import Run

        self.run = Path(run)
        self.model = agelab.load(run, device=device)
        cfg = self.model.cfg
        self.kind, self.size, self.channels, self.latent_dim = cfg.model, cfg.image_size, cfg.channels, cfg.latent_dim
        self.conditional = self.model.conditional  # a colorization run: the Colorize tab
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.lock = threading.Lock()  # one model call at a time (requests are served from a thread pool)
        found = Run.find(self.run)
        self.run_dir = found.path if found else None
        self.config = self._read_config(found)
        self.dataset = self.config.get("dataset")
        self.data_root = data_root or self.config.get("data_root")
        self.test: Tensor | None = None  # uint8 (N, C, S, S)
        self.test_error: str | None = None
        self._test_done = threading.Event()
        self._warm_up()
        if test_split and self.dataset:
            threading.Thread(target=self._load_test, name="agelab-serve-test-split", daemon=True).start()
        else:
            self.test_error = "disabled" if not test_split else "the checkpoint is not inside a run folder"
            self._test_done.set()

    @staticmethod
    def _read_config(run) -> dict:
        """The run's config as a dict; {} outside a run folder or when config.json is damaged (the test split is
        then off: the model itself loads from its checkpoint's model.json)."""
        from agelab.checkpoint import CheckpointError

        if run is None:
            return {}
        try:
            return run.config().to_dict()
        except CheckpointError:
            return {}

    def _warm_up(self) -> None:
        """One tiny forward pass, so that the first request does not pay for the backend's set-up."""
        with torch.no_grad():
            if self.conditional:
                self.colorize_z(torch.full((1, 3, self.size, self.size), 128, dtype=torch.uint8),
                                [1.0] * self.latent_dim)
            else:
                self.sample(1, 0)

    def _load_test(self) -> None:
        try:
            data = load_dataset(self.dataset, "test", self.size, self.data_root, progress=False)
            if data.channels != self.channels:
                raise ValueError(f"dataset {self.dataset} has {data.channels} channels, the model {self.channels}")
            if len(data) == 0:
                raise ValueError("the test split is empty")
            self.test = data.images
        except Exception as exc:  # a missing data root must not stop the demo: uploads still work
            self.test_error = f"{self.dataset} test split unavailable ({first_line(exc)}); pass --data-root"
        finally:
            self._test_done.set()

    # -- info ----------------------------------------------------------------------------
    def info(self) -> dict:
        if not self._test_done.is_set():
            test = {"state": "loading"}
        elif self.test is not None:
            test = {"state": "ready", "count": len(self.test)}
        else:
            test = {"state": "unavailable", "reason": self.test_error}
        if self.conditional:
            tabs = ["colorize"]
        elif self.model.has_encoder:
            tabs = ["sample", "reconstruct", "interpolate"]
        else:  # a DCGAN run: samples only
            tabs = ["sample"]
        return {"run": self.run.resolve().name if self.run_dir is None else self.run_dir.name,
                "checkpoint": Path(self.model.checkpoint_path).name, "model": self.kind,
                "dataset": self.dataset, "image_size": self.size, "channels": self.channels,
                "latent_dim": self.latent_dim, "prior": self.model.cfg.prior, "tabs": tabs,
                "transfer": self.conditional and self.model.has_encoder, "test": test,
                "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                           "samples": MAX_SAMPLES, "k": MAX_K, "steps": MAX_STEPS}}

    def need(self, conditional: bool, what: str) -> None:
        if conditional and not self.conditional:
            raise HTTPException(409, f"{what} needs a colorization run (--model cage or pix2pix); this run is an "
                                f"unconditional {self.kind} model")
        if not conditional and self.conditional:
            raise HTTPException(409, f"{what} needs an unconditional run (AGE or a baseline); this run is a colorization model "
                                f"({self.kind}): use the Colorize tab")

    # -- inputs --------------------------------------------------------------------------
    def test_images(self) -> Tensor:
        self._test_done.wait(timeout=120)
        if self.test is None:
            raise HTTPException(503, self.test_error or "the test split is still loading; try again")
        return self.test

    def test_image(self, index: int) -> Tensor:
        images = self.test_images()
        if not 0 <= index < len(images):
            raise HTTPException(400, f"test image index {index} is out of range 0..{len(images) - 1}")
        return images[index : index + 1]

    def read_upload(self, upload: UploadFile, what: str) -> Tensor:
        name = f"{what} ({upload.filename})" if upload.filename else what
        data = upload.file.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise HTTPException(413, f"{name} is over the upload limit of {_mb(self.max_upload_bytes)}")
        return decode_image(data, self.size, self.channels, self.max_pixels, name).unsqueeze(0)

    def image(self, upload: UploadFile | None, index: int | None, what: str = "image") -> Tensor:
        """uint8 (1, C, S, S) from an upload or a test index (exactly one of them)."""
        if upload is not None and index is not None:
            raise HTTPException(400, f"{what}: give an uploaded image or a test image index, not both")
        if upload is not None:
            return self.read_upload(upload, what)
        if index is not None:
            return self.test_image(index)
        raise HTTPException(400, f"{what}: no image; upload one or pick a test image")

    # -- unconditional -------------------------------------------------------------------
    def sample(self, n: int, seed: int) -> Tensor:
        with self.lock:
            return to_uint8(sample_images(self.model, n, seed=seed).cpu())

    def need_encoder(self, what: str) -> None:
        if not self.model.has_encoder:
            raise HTTPException(409, f"{what} needs a model with an encoder; this run is a {self.kind} model "
                                "(samples only)")

    def reconstruct(self, x_u8: Tensor) -> dict:
        self.need_encoder("reconstruction")
        x = to_float(x_u8).to(self.model.device)
        with self.lock, torch.no_grad():
            rec = self.model.reconstruct(x)
            err = reconstruction_errors(self.model, x)
        return {"input": data_url(x_u8[0]), "reconstruction": data_url(to_uint8(rec.cpu())[0]), **err}

    def interpolate(self, a_u8: Tensor, b_u8: Tensor, steps: int) -> dict:
        self.need_encoder("interpolation")
        xa, xb = to_float(a_u8).to(self.model.device), to_float(b_u8).to(self.model.device)
        with self.lock:
            frames = to_uint8(interpolation_rows(self.model, xa, xb, steps=steps).cpu())
        return {"a": data_url(a_u8[0]), "b": data_url(b_u8[0]), "frames": [data_url(f) for f in frames],
                "strip": data_url(make_grid(frames, nrow=steps))}

    # -- colorization --------------------------------------------------------------------
    def colorize(self, x_u8: Tensor, k: int, seed: int) -> dict:
        with self.lock:
            rgb = colorize(self.model, x_u8, k=k, seed=seed)[0]  # (K, 3, S, S) in [0, 1]
            codes = latent_codes(self.model, 1, k, seed)[0]  # the K codes colorize used
            gray = gray_rgb(uint8_to_lab(x_u8.to(self.model.device))[0])[0]
        return {"input": data_url(x_u8[0]), "gray": data_url(_rgb01_u8(gray)),
                "colorizations": [data_url(c) for c in _rgb01_u8(rgb)], "codes": codes.cpu().tolist()}

    def colorize_z(self, x_u8: Tensor, z: list[float]) -> dict:
        zt = torch.tensor([z], dtype=torch.float32)
        if not torch.isfinite(zt).all():
            raise HTTPException(400, "z: every component must be a finite number")
        if self.model.cfg.prior == "sphere" and zt.norm() < 1e-6:
            raise HTTPException(400, "z is the zero vector: it has no direction on the sphere")
        zt = self.model.prior.project(zt).to(self.model.device)  # onto the sphere (the prior's support)
        with self.lock, torch.no_grad():
            lightness, _ = uint8_to_lab(x_u8.to(self.model.device))
            ab = colorize_ab(self.model, lightness, zt.view(1, 1, -1))[0]  # (1, 2, S, S)
            rgb = lab_normalised_to_rgb(lightness, ab)[0]
        return {"image": data_url(_rgb01_u8(rgb)), "z": zt[0].cpu().tolist()}

    def transfer(self, source_u8: Tensor, target_u8: Tensor) -> dict:
        try:
            check_colorization_model(self.model, need_encoder=True)
        except ColorizeError as exc:
            raise HTTPException(409, first_line(exc)) from None
        with self.lock:
            out = transfer(self.model, source_u8, target_u8)[0]
            gray = gray_rgb(uint8_to_lab(target_u8.to(self.model.device))[0])[0]
        return {"source": data_url(source_u8[0]), "target_gray": data_url(_rgb01_u8(gray)),
                "result": data_url(_rgb01_u8(out)), "target": data_url(target_u8[0])}


# ---- HTTP --------------------------------------------------------------------------------
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
     b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _host_name(header: str) -> str:
    """The host of a Host header, without the port; IPv6 literals without brackets."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: request size limit (413 before the body is read when Content-Length says so,
    else while it streams), optional Host check (DNS rebinding), security headers on every response."""

    def __init__(self, app, max_upload: int, allowed_hosts: tuple[str, ...] | None = None):
        # two uploads per request at most (colour transfer), plus the multipart framing and form fields
        self.app, self.max_upload, self.allowed_hosts = app, max_upload, allowed_hosts
        self.max_body = 2 * max_upload + 64 * 1024

    async def _reply(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")).lower() not in self.allowed_hosts:
            return await self._reply(send, 400, "unexpected Host header: open the demo at the address it printed")
        limit_text = f"the limit is {_mb(self.max_upload)} per image"
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await self._reply(send, 400, "malformed Content-Length header")
            if int(length) > self.max_body:
                return await self._reply(send, 413, f"upload too large ({_mb(int(length))}): {limit_text}")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, f"upload too large: {limit_text}")
            return message

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *SECURITY_HEADERS])
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:4]:
        if err.get("type") == "json_invalid":
            return "malformed request: the body is not valid JSON"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "malformed request: " + "; ".join(parts)


def create_app(run: str | Path, *, data_root: str | None = None, device: str = "cpu", test_split: bool = True,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_IMAGE_PIXELS,
               allowed_hosts: tuple[str, ...] | None = None) -> FastAPI:
    """The demo app for RUN (a run folder or a checkpoint folder). The model is loaded here, once; the test
    split loads in a background thread (``data_root`` overrides the run's own). ``allowed_hosts``: the Host
    header names to accept (None: any; :func:`serve` restricts it when bound to a loopback address)."""
    demo = Demo(run, data_root=data_root, device=device, test_split=test_split,
                max_upload_bytes=max_upload_bytes, max_pixels=max_pixels)
    app = FastAPI(title="agelab serve", docs_url=None, redoc_url=None, openapi_url=None)  # Swagger UI uses a CDN
    app.state.demo = demo

    @app.exception_handler(RequestValidationError)
    async def _malformed(request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        return demo.info()

    # -- Sample ----------------------------------------------------------------------------
    @app.post("/api/sample")
    def sample(seed: int = Body(0, ge=0, le=SEED_MAX), n: int = Body(16, ge=1, le=MAX_SAMPLES)):
        demo.need(False, "sampling")
        t = time.perf_counter()
        images = demo.sample(n, seed)
        return {"seed": seed, "n": n, "images": [data_url(x) for x in images],
                "seconds": round(time.perf_counter() - t, 4)}

    @app.get("/api/sample.png")
    def sample_png(seed: int = Query(0, ge=0, le=SEED_MAX), n: int = Query(16, ge=1, le=MAX_SAMPLES),
                   nrow: int = Query(8, ge=1, le=MAX_SAMPLES)):
        demo.need(False, "sampling")
        return Response(png_bytes(make_grid(demo.sample(n, seed), nrow=nrow)), media_type="image/png")

    # -- the test split --------------------------------------------------------------------
    @app.get("/api/test-images")
    def test_images(start: int = Query(0, ge=0), count: int = Query(16, ge=1, le=MAX_THUMBS)):
        images = demo.test_images()
        stop = min(start + count, len(images))
        return {"total": len(images), "start": start,
                "images": [{"index": i, "src": data_url(images[i])} for i in range(start, stop)]}

    @app.get("/api/test-image/{index}")
    def test_image(index: int):
        return Response(png_bytes(demo.test_image(index)[0]), media_type="image/png",
                        headers={"cache-control": "max-age=3600"})

    # -- Reconstruct, Interpolate --------------------------------------------------------------
    @app.post("/api/reconstruct")
    def reconstruct(image: UploadFile | None = File(None), index: int | None = Form(None)):
        demo.need(False, "reconstruction")
        t = time.perf_counter()
        out = demo.reconstruct(demo.image(image, index))
        return {**out, "seconds": round(time.perf_counter() - t, 4)}

    @app.post("/api/interpolate")
    def interpolate(image_a: UploadFile | None = File(None), index_a: int | None = Form(None),
                    image_b: UploadFile | None = File(None), index_b: int | None = Form(None),
                    steps: int = Form(9, ge=2, le=MAX_STEPS)):
        demo.need(False, "interpolation")
        t = time.perf_counter()
        out = demo.interpolate(demo.image(image_a, index_a, "image A"), demo.image(image_b, index_b, "image B"), steps)
        return {**out, "seconds": round(time.perf_counter() - t, 4)}

    # -- Colorize, transfer ----------------------------------------------------------------
    @app.post("/api/colorize")
    def colorize_(image: UploadFile | None = File(None), index: int | None = Form(None),
                  k: int = Form(8, ge=1, le=MAX_K), seed: int = Form(0, ge=0, le=SEED_MAX)):
        demo.need(True, "colorization")
        t = time.perf_counter()
        out = demo.colorize(demo.image(image, index), k, seed)
        return {**out, "seconds": round(time.perf_counter() - t, 4)}

    @app.post("/api/colorize-z")
    def colorize_z(z: list[float] = Form(...), image: UploadFile | None = File(None),
                   index: int | None = Form(None)):
        demo.need(True, "colorization")
        if len(z) != demo.latent_dim:
            raise HTTPException(422, f"z: expected {demo.latent_dim} numbers (the latent size), got {len(z)}")
        t = time.perf_counter()
        out = demo.colorize_z(demo.image(image, index), z)
        return {**out, "seconds": round(time.perf_counter() - t, 4)}

    @app.post("/api/transfer")
    def transfer_(source: UploadFile | None = File(None), source_index: int | None = Form(None),
                  target: UploadFile | None = File(None), target_index: int | None = Form(None)):
        demo.need(True, "colour transfer")
        t = time.perf_counter()
        out = demo.transfer(demo.image(source, source_index, "source"), demo.image(target, target_index, "target"))
        return {**out, "seconds": round(time.perf_counter() - t, 4)}

    # The 413 that the guard raises while a body without Content-Length streams surfaces in the route that
    # parses the form, where FastAPI's exception handling turns it into a JSON response.
    app.add_middleware(Guard, max_upload=max_upload_bytes, allowed_hosts=allowed_hosts)
    return app


# ---- serving -----------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port). OSError says why it cannot."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(run: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, data_root: str | None = None,
          device: str = "cpu", max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_IMAGE_PIXELS,
          log_level: str = "info") -> None:
    """Load RUN once and serve the page with uvicorn until interrupted. Raises ServeError (bad host or port,
    the port in use) and the loading errors of :func:`agelab.load`."""
    import warnings

    import uvicorn

    loopback = is_loopback(host)
    allowed = tuple(sorted({*LOOPBACK_NAMES, host.lower()})) if loopback else None
    t = time.perf_counter()
    app = create_app(run, data_root=data_root, device=device, max_upload_bytes=max_upload_bytes,
                     max_pixels=max_pixels, allowed_hosts=allowed)
    demo: Demo = app.state.demo
    try:
        sock = bind(host, port)
    except (OSError, UnicodeError) as exc:
        raise ServeError(f"--host/--port: cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc})") \
            from None
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"agelab serve: {demo.run} ({demo.kind}, {demo.size}x{demo.size}, latent {demo.latent_dim}) loaded in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    if not loopback:
        print(f"agelab serve: warning: listening on {host}, so other machines can reach this demo; it has no "
              "authentication", file=sys.stderr, flush=True)
    print(f"agelab serve: open http://{shown}:{actual}/  (Ctrl+C stops)", flush=True)
    # This process decodes untrusted uploads: Pillow's own bomb check at the demo's limit, as an error.
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    config = uvicorn.Config(app, log_level=log_level, server_header=False, lifespan="off", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["MAX_IMAGE_PIXELS", "MAX_UPLOAD_BYTES", "ServeError", "create_app", "decode_image", "serve"]
