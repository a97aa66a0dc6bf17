"""Measure response times of `agelab serve` as the page sees them (HTTP on 127.0.0.1, client wall time).

    python docs/demo/latency.py RUN [--data-root DIR] [--n 30]

Starts `agelab serve RUN` on a free port and times each endpoint of the run's tabs N times; prints the
median and the slowest. Uploads are a 1024x768 JPEG photo (made from a test image) and the 64x64 PNG the
page sends back while a slider moves. Only the standard library on the client side.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from PIL import Image


def request(url: str, fields: dict | None = None, files: dict | None = None, body: dict | None = None) -> dict:
    if body is not None:
        data, ctype = json.dumps(body).encode(), "application/json"
    else:
        boundary = uuid.uuid4().hex
        parts = []
        for key, values in (fields or {}).items():
            for v in values if isinstance(values, list) else [values]:
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{v}\r\n'.encode())
        for key, (name, content) in (files or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        data, ctype = b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, headers={"content-type": ctype}, method="POST")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def timed(label: str, n: int, call) -> None:
    call()  # not counted: the first call of each kind
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    print(f"  {label:52s} median {statistics.median(times) * 1000:6.1f} ms   slowest {max(times) * 1000:6.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data-root")
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "agelab", "serve", args.run, "--port", "0"]
    cmd += ["--data-root", args.data_root] if args.data_root else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "open http://" in line:
                base = line.split("open ", 1)[1].split()[0].rstrip("/")
                break
        else:
            raise SystemExit("agelab serve did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        print(f"{args.run}: listening {time.perf_counter() - t0:.1f} s after the start (Python, torch, model)")
        info = json.loads(urllib.request.urlopen(base + "/api/info").read())
        while info["test"]["state"] == "loading":
            time.sleep(0.2)
            info = json.loads(urllib.request.urlopen(base + "/api/info").read())
        print(f"  {info['model']}, {info['image_size']}x{info['image_size']}, latent {info['latent_dim']}")
        test_png = urllib.request.urlopen(base + "/api/test-image/12").read()
        photo = Image.open(io.BytesIO(test_png)).convert("RGB").resize((1024, 768), Image.BICUBIC)
        buf = io.BytesIO()
        photo.save(buf, format="JPEG", quality=90)
        jpeg = buf.getvalue()
        print(f"  upload: a 1024x768 JPEG of {len(jpeg) // 1024} KB")
        if "colorize" in info["tabs"]:
            out = request(base + "/api/colorize", {"index": 12, "k": 8})
            small = base64.b64decode(out["input"].split(",", 1)[1])
            timed("colorize, K = 8, a test image", args.n,
                  lambda: request(base + "/api/colorize", {"index": 12, "k": 8}))
            timed("colorize, K = 8, the uploaded JPEG", args.n,
                  lambda: request(base + "/api/colorize", {"k": 8}, {"image": ("photo.jpg", jpeg)}))
            zs = [[0.1 * i - 1, 0.5, 0.3] for i in range(args.n + 1)]
            timed("slider move (colorize-z, the page's 64x64 PNG)", args.n,
                  lambda: request(base + "/api/colorize-z", {"z": zs.pop()}, {"image": ("input.png", small)}))
            if info["transfer"]:
                timed("colour transfer, two uploads (JPEG source)", args.n,
                      lambda: request(base + "/api/transfer", files={"source": ("photo.jpg", jpeg),
                                                                     "target": ("input.png", small)}))
        else:
            timed("sample, 36 images", args.n, lambda: request(base + "/api/sample", body={"seed": 1, "n": 36}))
            timed("reconstruct, a test image", args.n, lambda: request(base + "/api/reconstruct", {"index": 12}))
            timed("reconstruct, the uploaded JPEG", args.n,
                  lambda: request(base + "/api/reconstruct", files={"image": ("photo.jpg", jpeg)}))
            timed("interpolate, 9 steps, two test images", args.n,
                  lambda: request(base + "/api/interpolate", {"index_a": 1, "index_b": 2, "steps": 9}))
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    main()
