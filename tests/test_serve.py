"""``agelab serve``: the JSON/PNG API through FastAPI's TestClient (fast, in-process), then the page itself in
headless Chromium (Debian's ``chromium``, driven by Playwright) against a real ``agelab serve`` process on
127.0.0.1. Two tiny runs are trained once for the module: an AGE run on digits and a conditional AGE
(colorization) run on a small folder of colour images."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[test]')")
try:
    from fastapi.testclient import TestClient
except (ImportError, RuntimeError) as exc:  # Starlette's TestClient needs httpx2 (older ones: httpx)
    pytest.skip(f"FastAPI's TestClient cannot be used ({exc}); pip install -e '.[test]'", allow_module_level=True)

import agelab  # noqa: E402
from agelab.colorize import latent_codes  # noqa: E402
from agelab.config import TrainConfig  # noqa: E402
from agelab.data import load_dataset, to_float  # noqa: E402
from agelab.sampling import reconstruction_errors  # noqa: E402
from agelab.serve import _host_name, create_app, is_loopback  # noqa: E402
from agelab.trainer import train  # noqa: E402

from conftest import invoke, tiny_config  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ITERATIONS = 20  # enough for eval-mode outputs that depend visibly on z (a 4-step net's are nearly constant)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode(url: str) -> np.ndarray:
    """A data:image/png;base64 URL -> the image array."""
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height pixels (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + png_chunk(b"IEND", b""))


def colour_photo(h: int = 45, w: int = 60, seed: int = 0) -> np.ndarray:
    """A non-square colour image: a gray gradient with a coloured block (what the cage run trains on)."""
    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(40, 220, w, dtype=np.float32), (h, 1))[..., None].repeat(3, 2)
    img[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] = rng.integers(0, 256, 3)
    return img.astype(np.uint8)


def detail(response) -> str:
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and "\n" not in body["detail"], body
    return body["detail"]


# ---------------------------------------------------------------------------
# two tiny runs, trained once
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory):
    """Module-wide: no real datasets, and the folder dataset's cache goes to a temporary folder."""
    cache = tmp_path_factory.mktemp("serve-xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AGELAB_DATA", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="module")
def runs(tmp_path_factory, isolated_cache) -> dict[str, Path]:
    """{'age': a digits run (32 px, latent 4), 'cage': a colorization run (32 px, latent 3)}, 20 steps each."""
    root = tmp_path_factory.mktemp("serve-runs")
    age = train(tiny_config(root / "runs", iterations=ITERATIONS, ckpt_every=ITERATIONS, tag="serve"), progress=False)
    folder = root / "colour"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(colour_photo(36 + i % 5, 44 + i % 7, seed=i)).save(folder / f"{i:03d}.png")
    cfg = TrainConfig(dataset="folder", data_root=str(folder), image_size=32, model="cage", latent_dim=3, width=4,
                      res_blocks=1, batch_size=8, iterations=ITERATIONS, log_every=10, sample_every=1000,
                      ckpt_every=ITERATIONS, device="cpu", out_dir=str(root / "runs"), tag="cage", mu=0.0, lam=0.0,
                      enc_latent_recon=1000.0, gen_image_recon=10.0)
    cage = train(cfg.validate(), progress=False)
    return {"age": age, "cage": cage}


@pytest.fixture(scope="module")
def age_client(runs):
    return TestClient(create_app(runs["age"]))


@pytest.fixture(scope="module")
def cage_client(runs):
    return TestClient(create_app(runs["cage"]))


# ---------------------------------------------------------------------------
# the page and its assets: local, no CDN
# ---------------------------------------------------------------------------
def test_page_assets_are_local_and_the_api_describes_the_run(age_client):
    page = age_client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    for name in ("app.js", "style.css"):
        assert age_client.get(f"/static/{name}").status_code == 200
    static = Path(agelab.__file__).parent / "serve_static"
    for path in static.iterdir():  # nothing fetched from elsewhere: no absolute URLs at all
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    for path in ("/docs", "/redoc", "/openapi.json"):  # FastAPI's docs pages load Swagger UI from a CDN: off
        assert age_client.get(path).status_code == 404
    assert age_client.get("/static/../serve.py").status_code == 404

    info = age_client.get("/api/info").json()
    assert info["model"] == "age" and info["tabs"] == ["sample", "reconstruct", "interpolate"]
    assert (info["image_size"], info["channels"], info["latent_dim"], info["transfer"]) == (32, 1, 4, False)
    for _ in range(100):  # the test split loads in a background thread
        if info["test"]["state"] != "loading":
            break
        time.sleep(0.05)
        info = age_client.get("/api/info").json()
    assert info["test"] == {"state": "ready", "count": 299}


# ---------------------------------------------------------------------------
# Sample, Reconstruct, Interpolate
# ---------------------------------------------------------------------------
def test_sample_returns_pngs_and_a_seed_gives_the_same_samples(age_client):
    def sample(seed, n=6):
        r = age_client.post("/api/sample", json={"seed": seed, "n": n})
        assert r.status_code == 200, r.text
        return r.json()

    a, again, other = sample(3), sample(3), sample(4)
    assert a["seed"] == 3 and a["n"] == 6 and len(a["images"]) == 6
    images = [decode(u) for u in a["images"]]
    assert all(x.shape == (32, 32) and x.dtype == np.uint8 for x in images)  # grayscale, the model's size
    assert a["images"] == again["images"]
    assert a["images"] != other["images"]
    grid = age_client.get("/api/sample.png", params={"seed": 3, "n": 6, "nrow": 3})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    im = Image.open(io.BytesIO(grid.content))
    assert im.size == (3 * 34 + 2, 2 * 34 + 2)  # 3 x 2 images of 32 px with 2 px padding
    assert np.array_equal(np.asarray(im)[2:34, 2:34], images[0])


def test_reconstruct_a_test_image_and_an_upload(age_client, runs):
    r = age_client.post("/api/reconstruct", data={"index": 5})
    assert r.status_code == 200, r.text
    out = r.json()
    assert decode(out["input"]).shape == decode(out["reconstruction"]).shape == (32, 32)
    # the same numbers as agelab's own reconstruction_errors on that test image
    model = agelab.load(runs["age"])
    x = to_float(load_dataset("digits", "test", 32).images[5:6])
    expected = reconstruction_errors(model, x)
    for key in ("l1", "mse", "psnr"):
        assert out[key] == pytest.approx(expected[key], rel=1e-4)
    assert np.array_equal(decode(out["input"]), load_dataset("digits", "test", 32).images[5, 0].numpy())

    photo = np.zeros((50, 40, 3), np.uint8)  # any size and mode: RGB, not square
    photo[10:40, 15:25] = 255
    r = age_client.post("/api/reconstruct", files={"image": ("digit.png", png(photo), "image/png")})
    assert r.status_code == 200, r.text
    assert decode(r.json()["reconstruction"]).shape == (32, 32) and r.json()["psnr"] > 0


def test_interpolate_between_two_images(age_client):
    r = age_client.post("/api/interpolate", data={"index_a": 1, "index_b": 2, "steps": 5})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["frames"]) == 5 and decode(out["strip"]).shape == (36, 5 * 34 + 2)
    # the ends of the spherical path are e(a) and e(b): their decodings are the reconstructions
    rec_a = age_client.post("/api/reconstruct", data={"index": 1}).json()["reconstruction"]
    rec_b = age_client.post("/api/reconstruct", data={"index": 2}).json()["reconstruction"]
    assert np.abs(decode(out["frames"][0]).astype(int) - decode(rec_a)).max() <= 1
    assert np.abs(decode(out["frames"][-1]).astype(int) - decode(rec_b)).max() <= 1
    upload = png(np.full((32, 32), 200, np.uint8))
    r = age_client.post("/api/interpolate", data={"index_a": 1, "steps": 3},
                        files={"image_b": ("b.png", upload, "image/png")})
    assert r.status_code == 200 and len(r.json()["frames"]) == 3


# ---------------------------------------------------------------------------
# bad input: a message and a 4xx, never a crash
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, data, status, words", [
    ("notes.txt", b"just some text, not an image", 400, "not an image"),
    ("empty.png", b"", 400, "empty"),
    # EPS would go to Ghostscript: not among the formats the demo decodes
    ("fake.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 400, "not an image"),
    ("truncated.png", png(np.full((64, 64), 7, np.uint8))[:60], 400, "not a readable image"),
    ("bomb.png", declared_png(100_000, 100_000), 413, "decompression bomb"),  # Pillow's own limit
    ("big.png", declared_png(5000, 5000), 413, "over the limit"),  # under Pillow's, over the demo's 4096 x 4096
])
def test_bad_uploads_get_a_4xx_and_a_message(age_client, cage_client, name, data, status, words):
    r = age_client.post("/api/reconstruct", files={"image": (name, data, "application/octet-stream")})
    assert r.status_code == status and words in detail(r) and name in detail(r)
    r = cage_client.post("/api/colorize", files={"image": (name, data, "application/octet-stream")})
    assert r.status_code == status and words in detail(r)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes about skipped damaged TIFF tags
def test_damaged_images_of_every_format_get_a_4xx_never_a_crash(age_client):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format=fmt)
        good = buf.getvalue()
        r = age_client.post("/api/reconstruct", files={"image": (f"ok.{fmt.lower()}", good)})
        assert r.status_code == 200, (fmt, r.text)
        for trial in range(12):
            data = bytearray(good)
            if trial % 3 == 0:  # cut short
                data = data[: int(rng.integers(8, len(data)))]
            else:  # a few random bytes overwritten (the format's header included)
                for i in rng.integers(0, min(len(data), 64 if trial % 3 == 1 else len(data)), 4):
                    data[i] = int(rng.integers(0, 256))
            r = age_client.post("/api/reconstruct", files={"image": (f"bad.{fmt.lower()}", bytes(data))})
            assert r.status_code in (200, 400, 413), (fmt, trial, r.status_code, r.text)
            if r.status_code != 200:
                assert detail(r)


def test_oversized_uploads_are_refused(runs):
    client = TestClient(create_app(runs["age"], max_upload_bytes=50_000, test_split=False))
    big = png(np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8))  # ~68 KB of noise
    assert len(big) > 50_000
    r = client.post("/api/reconstruct", files={"image": ("noise.png", big, "image/png")})
    assert r.status_code == 413 and "over the upload limit of 48.8 KB" in detail(r)
    huge = b"\0" * 300_000  # past the whole request's limit: refused from Content-Length, before reading it
    r = client.post("/api/reconstruct", files={"image": ("huge.png", huge, "image/png")})
    assert r.status_code == 413 and "too large" in detail(r)

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(30):
            yield b"x" * 10_000

    r = client.post("/api/reconstruct", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "too large" in detail(r)


def test_uploads_are_not_written_outside_a_temporary_folder(runs, tmp_path, monkeypatch):
    """A 2 MB upload (over the multipart parser's 1 MB in memory) spills to the temp folder, and is gone after."""
    spill = tmp_path / "tmp"
    spill.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    before = sorted(p.relative_to(runs["age"]) for p in runs["age"].rglob("*"))
    client = TestClient(create_app(runs["age"], test_split=False))
    noise = png(np.random.default_rng(1).integers(0, 256, (900, 900, 3), dtype=np.uint8))
    assert len(noise) > 2**21
    r = client.post("/api/reconstruct", files={"image": ("noise.png", noise, "image/png")})
    assert r.status_code == 200, r.text
    assert list(spill.iterdir()) == [] and list(cwd.iterdir()) == []
    assert sorted(p.relative_to(runs["age"]) for p in runs["age"].rglob("*")) == before


def test_malformed_requests_get_a_4xx(age_client, cage_client, runs):
    cases = [
        age_client.post("/api/sample", content=b'{"seed": 1,', headers={"content-type": "application/json"}),
        age_client.post("/api/sample", json={"seed": "abc"}),
        age_client.post("/api/sample", json={"seed": -1}),
        age_client.post("/api/sample", json={"n": 10_000}),
        age_client.get("/api/sample.png", params={"n": 0}),
        age_client.post("/api/reconstruct", json={"index": 1}),  # not a form: no image
        age_client.post("/api/reconstruct", data={"index": "seven"}),
        age_client.post("/api/reconstruct", data={"index": 10_000}),
        age_client.post("/api/reconstruct", data={"index": 1},
                        files={"image": ("a.png", png(np.zeros((8, 8), np.uint8)))}),
        age_client.post("/api/reconstruct", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"}),
        age_client.post("/api/interpolate", data={"index_a": 1, "index_b": 2, "steps": 1}),
        age_client.post("/api/interpolate", data={"index_a": 1}),
        age_client.get("/api/test-image/99999"),
        age_client.get("/api/test-images", params={"count": 1000}),
        age_client.post("/api/colorize", data={"index": 0}),  # an AGE run cannot colorize: 409
        cage_client.post("/api/sample", json={"seed": 1}),  # a colorization run cannot sample: 409
        cage_client.post("/api/colorize-z", data={"index": 0, "z": [1, 2]}),  # latent size is 3
        cage_client.post("/api/colorize-z", data={"index": 0, "z": [0, 0, 0]}),  # no direction on the sphere
        cage_client.post("/api/colorize-z", data={"index": 0, "z": ["nan", 1, 1]}),
        cage_client.post("/api/colorize", data={"index": 0, "k": 0}),
        age_client.put("/api/sample", json={}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text)
        if r.status_code != 405:
            assert detail(r)
    assert "not valid JSON" in detail(cases[0])
    assert cases[7].status_code == 400 and "out of range 0..298" in detail(cases[7])
    assert cases[8].status_code == 400 and "not both" in detail(cases[8])
    assert cases[14].status_code == 409 and "colorization run" in detail(cases[14])
    assert cases[15].status_code == 409 and "Colorize tab" in detail(cases[15])
    # a Host check when bound to loopback (DNS rebinding)
    guarded = TestClient(create_app(runs["age"], test_split=False, allowed_hosts=("127.0.0.1", "localhost")),
                         base_url="http://127.0.0.1:7860")
    assert guarded.get("/api/info").status_code == 200
    r = guarded.get("/api/info", headers={"host": "attacker.example:7860"})
    assert r.status_code == 400 and "Host" in detail(r)


# ---------------------------------------------------------------------------
# Colorize, sliders, transfer
# ---------------------------------------------------------------------------
def test_colorize_gives_k_colorizations_and_their_codes(cage_client, runs):
    photo = colour_photo(45, 70, seed=3)
    files = {"image": ("car.png", png(photo), "image/png")}
    r = cage_client.post("/api/colorize", data={"k": 4, "seed": 7}, files=files)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["colorizations"]) == 4 and all(decode(u).shape == (32, 32, 3) for u in out["colorizations"])
    assert decode(out["input"]).shape == (32, 32, 3)  # resized and center-cropped to the model's size
    gray = decode(out["gray"])
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 2  # a gray image
    codes = torch.tensor(out["codes"])
    assert codes.shape == (4, 3) and torch.allclose(codes.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(codes, latent_codes(agelab.load(runs["cage"]), 1, 4, seed=7)[0])
    assert len({u for u in out["colorizations"]}) == 4  # different z, different colours
    again = cage_client.post("/api/colorize", data={"k": 4, "seed": 7}, files=files).json()
    assert again["colorizations"] == out["colorizations"]
    gray_only = png(np.asarray(Image.fromarray(photo).convert("L")))  # a grayscale upload works too
    r = cage_client.post("/api/colorize", data={"k": 2}, files={"image": ("gray.png", gray_only, "image/png")})
    assert r.status_code == 200 and len(r.json()["colorizations"]) == 2


def test_slider_z_recolors_and_reproduces_the_colorizations(cage_client):
    out = cage_client.post("/api/colorize", data={"index": 2, "k": 3, "seed": 1}).json()
    # what the page does: send the model-size input back with the sliders' z
    input_png = base64.b64decode(out["input"].split(",", 1)[1])

    def recolor(z):
        r = cage_client.post("/api/colorize-z", data={"z": z}, files={"image": ("input.png", input_png, "image/png")})
        assert r.status_code == 200, r.text
        return r.json()

    for i in range(3):  # the code of colorization i gives colorization i
        got = decode(recolor(out["codes"][i])["image"]).astype(int)
        assert np.abs(got - decode(out["colorizations"][i])).max() <= 1
    a, b = recolor([0.9, 0.1, 0.0]), recolor([-0.2, 0.3, 0.9])
    assert a["image"] != b["image"]
    assert np.linalg.norm(a["z"]) == pytest.approx(1.0, abs=1e-6)  # projected onto the sphere
    assert recolor([1.8, 0.2, 0.0])["image"] == a["image"]  # only the direction matters
    assert cage_client.post("/api/colorize-z", data={"z": [0.9, 0.1, 0.0], "index": 2}).json()["image"] == a["image"]


def test_colour_transfer(cage_client):
    target = png(colour_photo(40, 40, seed=5))
    r = cage_client.post("/api/transfer", data={"source_index": 1}, files={"target": ("t.png", target, "image/png")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert all(decode(out[k]).shape == (32, 32, 3) for k in ("source", "target_gray", "result", "target"))
    assert out["result"] != out["target_gray"]
    other = cage_client.post("/api/transfer", data={"source_index": 3},
                             files={"target": ("t.png", target, "image/png")}).json()
    assert other["result"] != out["result"]  # another source, other colours
    r = cage_client.post("/api/transfer", data={"source_index": 1})
    assert r.status_code == 400 and "target" in detail(r)


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------
def test_serve_help_and_the_web_stack_is_imported_only_by_serve(capsys):
    code, stdout, err = invoke(["serve", "--help"], capsys)
    assert code == 0 and err == ""
    for option in ("RUN", "--host", "--port", "--data-root", "--device", "--max-upload-mb"):
        assert option in stdout
    assert "127.0.0.1" in stdout and "7860" in stdout
    probe = ("import sys, agelab.cli; agelab.cli.build_parser().parse_args(['serve', 'x']); "
             "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'agelab.serve') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_serve_without_the_extra_says_what_to_install(capsys, monkeypatch, runs):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    code, _, err = invoke(["serve", runs["age"]], capsys)
    assert code == 2 and err.count("\n") == 1 and "needs uvicorn: pip install 'agelab[serve]'" in err, err


def test_loopback_addresses_and_host_headers():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org", ""):
        assert not is_loopback(host), host
    assert [_host_name(h) for h in ("127.0.0.1:7860", "localhost", "[::1]:7860", "[::1]", "evil.example:80")] == [
        "127.0.0.1", "localhost", "::1", "::1", "evil.example"]


def test_serve_command_errors_are_one_line(capsys, tmp_path, runs):
    code, _, err = invoke(["serve", tmp_path / "missing"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no such run folder" in err
    code, _, err = invoke(["serve", runs["age"], "--port", "70000"], capsys)
    assert code == 2 and "expected a TCP port" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = invoke(["serve", runs["age"], "--port", port], capsys)
    assert code == 2 and err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err


# ---------------------------------------------------------------------------
# the page in a real browser, against `agelab serve`
# ---------------------------------------------------------------------------
class Server:
    """``python -m agelab serve RUN --port 0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, run: Path, env: dict):
        self.proc = subprocess.Popen([sys.executable, "-m", "agelab", "serve", str(run), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(120) or self.url is None:
            self.stop()
            raise AssertionError("agelab serve did not start:\n" + "".join(self.lines))

    def _read(self):
        for line in self.proc.stdout:  # keep draining, so that the access log never blocks the server
            self.lines.append(line)
            if "open http://" in line:
                self.url = line.split("open ", 1)[1].split()[0]
                self.ready.set()
        self.ready.set()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def servers(runs, isolated_cache):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(isolated_cache)}
    env.pop("AGELAB_DATA", None)
    started: dict[str, Server] = {}

    def get(kind: str) -> str:
        if kind not in started:
            started[kind] = Server(runs[kind], env)
        return started[kind].url

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)  # every step takes well under a second; fail fast when one never happens
    pg = context.new_page()
    pg.errors = []  # a test that provokes an error response removes the console line it expects
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: pg.errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()
    assert not pg.errors, pg.errors  # no script errors, no CSP violations, no failed loads


def open_page(page, url: str):
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")


def test_browser_new_samples_change_the_grid(page, servers):
    open_page(page, servers("age"))
    page.wait_for_selector("#sample-grid[data-seed='0'] img")
    before = page.eval_on_selector_all("#sample-grid img", "els => els.map(e => e.src)")
    assert len(before) == 36
    page.click("#sample-new")
    page.wait_for_function("() => document.querySelector('#sample-grid').dataset.seed !== '0'")
    after = page.eval_on_selector_all("#sample-grid img", "els => els.map(e => e.src)")
    assert len(after) == 36 and after != before
    assert page.input_value("#sample-seed") == page.get_attribute("#sample-grid", "data-seed")
    page.click("#sample-grid img:nth-child(4)")  # a click shows that sample large
    assert page.is_visible("#sample-large")
    assert page.get_attribute("#sample-large-img", "src") == after[3]


def test_browser_upload_an_image_and_get_a_reconstruction(page, servers, tmp_path):
    open_page(page, servers("age"))
    page.click("#tab-reconstruct")
    digit = np.zeros((64, 64), np.uint8)
    digit[12:52, 28:36] = 255
    (tmp_path / "digit.png").write_bytes(png(digit))
    page.set_input_files("#rec-picker input.file", str(tmp_path / "digit.png"))
    page.wait_for_selector("#rec-result:not([hidden])")
    assert "PSNR" in page.inner_text("#rec-error")
    assert page.get_attribute("#rec-output", "src").startswith("data:image/png;base64,")
    assert page.inner_text("#rec-picker .source") == "digit.png"

    (tmp_path / "notes.png").write_bytes(b"not an image at all")  # a bad upload: the message is on the page
    page.set_input_files("#rec-picker input.file", str(tmp_path / "notes.png"))
    page.wait_for_function("() => document.querySelector('#rec-msg').textContent.includes('not an image')")
    page.errors.remove("Failed to load resource: the server responded with a status of 400 (Bad Request)")

    page.click("#tab-interpolate")  # and a test-split interpolation, with its slider
    for slot, index in (("a", 3), ("b", 8)):
        page.fill(f"#int-picker-{slot} input.index", str(index))
        page.press(f"#int-picker-{slot} input.index", "Enter")
    page.wait_for_selector("#int-result:not([hidden])")
    assert page.locator("#int-strip img").count() == 9
    middle = page.get_attribute("#int-frame", "src")
    page.focus("#int-slider")
    page.keyboard.press("End")
    assert page.inner_text("#int-t") == "t = 1.000" and page.get_attribute("#int-frame", "src") != middle


def test_browser_colorize_and_move_a_slider(page, servers, tmp_path):
    open_page(page, servers("cage"))
    assert page.is_visible("#tab-colorize") and not page.is_visible("#tab-sample")
    (tmp_path / "car.png").write_bytes(png(colour_photo(48, 64, seed=9)))
    page.set_input_files("#col-picker input.file", str(tmp_path / "car.png"))
    page.wait_for_selector("#col-live[data-z]")
    assert page.locator("#col-strip img.colorization").count() == 8
    first_z, first_src = page.get_attribute("#col-live", "data-z"), page.get_attribute("#col-live", "src")
    page.focus("#col-z1")
    page.keyboard.press("End")  # z1 to +1: the output follows
    page.wait_for_function(f"() => document.querySelector('#col-live').dataset.z !== {json.dumps(first_z)}")
    page.wait_for_function(f"() => document.querySelector('#col-live').src !== {json.dumps(first_src)}")
    page.keyboard.press("Home")  # and to -1
    page.wait_for_function("() => document.querySelector('#col-live').dataset.z.startsWith('-')")
    assert page.inner_text("#col-msg") == ""

    page.fill("#tr-picker input.index", "1")  # colour transfer from a test image
    page.press("#tr-picker input.index", "Enter")
    page.wait_for_selector("#tr-result:not([hidden])")
    assert page.get_attribute("#tr-out", "src").startswith("data:image/png;base64,")


@pytest.mark.skipif(not os.environ.get("CI"), reason="checks CI's set-up")
def test_ci_has_chromium_so_the_browser_tests_run():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing on CI: .ci/run installs Debian's chromium"


def test_a_dcgan_run_serves_samples_only(tmp_path, isolated_cache):
    """A model without an encoder: the page offers Sample alone and the encoder endpoints answer 409."""
    run = train(tiny_config(tmp_path / "runs", model="dcgan", iterations=2, ckpt_every=2, tag="gan"), progress=False)
    client = TestClient(create_app(run, test_split=False))
    info = client.get("/api/info").json()
    assert info["model"] == "dcgan" and info["tabs"] == ["sample"]
    assert client.post("/api/sample", json={"seed": 1, "n": 4}).status_code == 200
    upload = png(np.zeros((32, 32), dtype=np.uint8))
    r = client.post("/api/reconstruct", files={"image": ("x.png", upload, "image/png")})
    assert r.status_code == 409 and "needs a model with an encoder" in r.json()["detail"]
