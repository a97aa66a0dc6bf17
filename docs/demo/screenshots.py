"""Take the screenshots of docs/demo.md: each tab of `agelab serve`, in headless Chromium (Playwright).

    python docs/demo/screenshots.py --age-run RUN --colorization-run RUN [--data-root DIR] [--out docs/demo]

Starts `agelab serve` for each run on a free 127.0.0.1 port, drives the page as a person would (test-split
images are picked by index, so the pictures are reproducible) and writes sample.png, reconstruct.png,
interpolate.png and colorize.png, reduced to a 256-colour palette to stay small.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import threading
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def start(run: str, data_root: str | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "agelab", "serve", run, "--port", "0"]
    cmd += ["--data-root", data_root] if data_root else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="")
        if "open http://" in line:  # then keep draining its log, so that the server never blocks on it
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.split("open ", 1)[1].split()[0]
    raise SystemExit(f"agelab serve {run} did not start")


def save(page, path: Path, selector: str = "body") -> None:
    png = page.locator(selector).screenshot()
    im = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    im.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def pick(page, picker: str, index: int) -> None:
    page.fill(f"{picker} input.index", str(index))
    page.press(f"{picker} input.index", "Enter")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--age-run", required=True, help="an unconditional AGE run (Sample, Reconstruct, Interpolate)")
    ap.add_argument("--colorization-run", required=True, help="a conditional AGE run (Colorize)")
    ap.add_argument("--data-root", help="dataset folder for the test splits (default: each run's own)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    servers = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 960, "height": 700})

            proc, url = start(args.age_run, args.data_root)
            servers.append(proc)
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            page.wait_for_selector("#sample-grid img")
            page.click("#sample-grid img:nth-child(8)")
            save(page, out / "sample.png")

            page.click("#tab-reconstruct")
            pick(page, "#rec-picker", 7)
            page.wait_for_selector("#rec-result:not([hidden])")
            save(page, out / "reconstruct.png")

            page.click("#tab-interpolate")
            pick(page, "#int-picker-a", 3)
            pick(page, "#int-picker-b", 2)
            page.wait_for_selector("#int-result:not([hidden])")
            page.fill("#int-steps", "10")
            page.click("#int-go")
            page.wait_for_function("() => document.querySelectorAll('#int-strip img').length === 10")
            page.focus("#int-slider")
            page.keyboard.press("ArrowLeft")
            save(page, out / "interpolate.png")

            proc, url = start(args.colorization_run, args.data_root)
            servers.append(proc)
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            pick(page, "#col-picker", 12)
            page.wait_for_selector("#col-live[data-z]")
            page.click("#col-strip img.colorization:nth-child(3)")
            page.wait_for_timeout(300)
            pick(page, "#tr-picker", 27)  # a colourful test image as the colour source
            page.wait_for_selector("#tr-result:not([hidden])")
            page.set_viewport_size({"width": 960, "height": 1300})
            save(page, out / "colorize.png")
            browser.close()
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
