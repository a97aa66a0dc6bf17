"""Compare colorization runs (conditional AGE, pix2pix with noise) on held-out images (paper fig. 4).

    .venv/bin/python scripts/colorization_report.py --age /work/runs/00002-cars-cage \\
        --pix2pix /work/runs/00003-cars-pix2pix --data-root /work/shared/data \\
        --json docs/figures/cars-colorization-metrics.json --fig-dir docs/figures
    # any number of runs, each with its label (e.g. two AGE recipes):
    .venv/bin/python scripts/colorization_report.py --run swapped=RUN1 --run paper-adaptive=RUN2 ...

Writes
  * a JSON with :func:`agelab.metrics.colorization.evaluate_colorization` for every run on the
    same held-out images, K samples each (z drawn independently per image, same seed for all);
  * ``<prefix>-colorizations.png``: for several held-out inputs one row per run, each
    the gray input first, then K colorizations (the same K codes z in every row), then the real image;
  * ``<prefix>-transfer.png``: colour transfer with the first AGE run, one row per pair: source, target in
    gray, g(e(ab_source | L_source) | L_target), the real target (sources: the 6 most colourful
    held-out images; targets: 6 fixed held-out images spread over the split);
and prints a markdown table of the metrics. Figures are palette PNGs (256 colours) to stay small.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import agelab
from agelab.colorize import colorize, transfer
from agelab.colorspace import gray_rgb, uint8_to_lab
from agelab.data import load_dataset
from agelab.metrics.colorization import colorfulness, evaluate_colorization

PAD = 2
LABEL_W = 52

ROWS = [  # (metric key, label, unit/format)
    ("diversity", "diversity: mean pairwise ab distance of the K samples (Lab units)", "{:.2f}"),
    ("z_sensitivity", "z-sensitivity: mean abs ab change between two z / ab spread of the truth", "{:.3f}"),
    ("colorfulness", "colourfulness (Hasler-Suesstrunk), truth: {truth:.1f}", "{:.1f}"),
    ("l1_best", "ab L1, best of K (Lab units)", "{:.2f}"),
    ("l1_mean_of_k", "ab L1, mean of K", "{:.2f}"),
    ("l1_sample", "ab L1, one sample", "{:.2f}"),
    ("psnr_best", "PSNR (dB, RGB), best of K", "{:.2f}"),
    ("psnr_mean_of_k", "PSNR (dB, RGB), mean of K", "{:.2f}"),
    ("psnr_sample", "PSNR (dB, RGB), one sample", "{:.2f}"),
]


def to_pil(rgb01: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL RGB."""
    arr = (rgb01.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def labelled_grid(rows: list[tuple[str, list[torch.Tensor]]], size: int, group: int = 1) -> Image.Image:
    """Rows of (label, [images (3, S, S) in [0, 1]]) -> one white-padded image with the labels on the left;
    an extra gap after every ``group`` rows."""
    ncol = max(len(r[1]) for r in rows)
    gap = 3 * PAD
    label_w = LABEL_W if any(r[0] for r in rows) else 0
    w = label_w + ncol * (size + PAD) + PAD
    h = len(rows) * (size + PAD) + PAD + gap * ((len(rows) - 1) // group)
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, images) in enumerate(rows):
        y = PAD + i * (size + PAD) + gap * (i // group)
        draw.text((4, y + size // 2 - 6), label, fill="black")
        for j, img in enumerate(images):
            canvas.paste(to_pil(img), (label_w + PAD + j * (size + PAD), y))
    return canvas


def save_small_png(image: Image.Image, path: Path) -> Path:
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


@torch.no_grad()
def colorization_figure(models: dict, images: torch.Tensor, k: int, seed: int) -> Image.Image:
    """Per input one row per model (label -> model): the gray input, K colorizations, the real image."""
    outs = {label: colorize(model, images, k, seed) for label, model in models.items()}  # (N, K, 3, S, S) each
    gray = gray_rgb(uint8_to_lab(images)[0])  # (N, 3, S, S)
    real = images.float() / 255
    rows = [(label[:8], [gray[i], *out[i], real[i]]) for i in range(len(images)) for label, out in outs.items()]
    return labelled_grid(rows, images.shape[-1], group=len(models))


@torch.no_grad()
def transfer_figure(age, sources: torch.Tensor, targets: torch.Tensor) -> Image.Image:
    out = transfer(age, sources, targets)
    gray = gray_rgb(uint8_to_lab(targets)[0])
    rows = [("", [sources[i].float() / 255, gray[i], out[i], targets[i].float() / 255]) for i in range(len(out))]
    return labelled_grid(rows, targets.shape[-1])


def markdown_table(result: dict) -> str:
    runs = result["runs"]
    metrics = [r["metrics"] for r in runs.values()]
    lines = ["| metric | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for key, label, fmt in ROWS:
        label = label.format(truth=metrics[0]["colorfulness_true"])
        lines.append(f"| {label} | " + " | ".join(fmt.format(m[key]) for m in metrics) + " |")
    return "\n".join(lines)


def labelled_run(text: str) -> tuple[str, Path]:
    """``LABEL=RUN`` -> (label, run folder)."""
    label, sep, run = text.partition("=")
    if not sep or not label or not run:
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN, got {text!r}")
    return label, Path(run)


def run_info(run: Path, model) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    return {"run": str(run), "checkpoint": str(model.checkpoint_path), "model": model.cfg.model,
            "iterations": cfg["iterations"], "width": cfg["width"], "batch_size": cfg["batch_size"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--age", type=Path, help="conditional AGE run folder (--model cage), labelled 'AGE'")
    ap.add_argument("--pix2pix", type=Path, help="pix2pix run folder (--model pix2pix), labelled 'pix2pix'")
    ap.add_argument("--run", action="append", default=[], type=labelled_run, metavar="LABEL=RUN",
                    help="another run to compare, cage or pix2pix, with its label (repeatable)")
    ap.add_argument("--data-root", help="dataset folder (default: the first run's)")
    ap.add_argument("--images", type=int, default=814, help="held-out images to evaluate (default: 814, all)")
    ap.add_argument("--k", type=int, default=8, help="colorizations per image (default: 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the latent samples (default: 0)")
    ap.add_argument("--json", type=Path, default=Path("docs/figures/cars-colorization-metrics.json"),
                    help="output JSON")
    ap.add_argument("--fig-dir", type=Path, default=Path("docs/figures"), help="folder for the two PNGs")
    ap.add_argument("--prefix", default="cars", help="file name prefix of the PNGs (default: cars)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    named = ([("AGE", args.age)] if args.age else []) + ([("pix2pix", args.pix2pix)] if args.pix2pix else []) + args.run
    if len({label for label, _ in named}) != len(named):
        ap.error("every run needs its own label")
    runs = {label: (run, agelab.load(run)) for label, run in named}
    wrong = {label: m.cfg.model for label, (_, m) in runs.items() if m.cfg.model not in ("cage", "pix2pix")}
    if args.age and runs["AGE"][1].cfg.model != "cage":
        wrong["AGE"] = runs["AGE"][1].cfg.model
    if args.pix2pix and runs["pix2pix"][1].cfg.model != "pix2pix":
        wrong["pix2pix"] = runs["pix2pix"][1].cfg.model
    if wrong:
        sys.exit(f"not the colorization model expected: {wrong} (--age: cage, --pix2pix: pix2pix, --run: either)")
    cages = [label for label, (_, m) in runs.items() if m.cfg.model == "cage"]
    if not cages:
        ap.error("give at least one conditional AGE run (--age or --run)")
    first_run, first = next(iter(runs.values()))
    cfg = json.loads((first_run / "config.json").read_text())
    test = load_dataset(cfg["dataset"], "test", first.cfg.image_size, args.data_root or cfg.get("data_root"))
    images = test.images[: args.images]

    result = {"dataset": cfg["dataset"], "split": "test", "images": len(images), "k": args.k, "seed": args.seed,
              "runs": {}}
    for label, (run, model) in runs.items():
        t = time.perf_counter()
        metrics = evaluate_colorization(model, images, k=args.k, seed=args.seed)
        entry = {**run_info(run, model), "metrics": metrics, "eval_seconds": round(time.perf_counter() - t, 1)}
        result["runs"][label] = entry
        print(f"{label}: {len(images)} images x {args.k} in {entry['eval_seconds']} s", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))

    args.fig_dir.mkdir(parents=True, exist_ok=True)
    n = len(test.images)
    picks = [round(i * (n - 1) / 5) for i in range(6)]  # 6 inputs spread over the held-out split
    models = {label: model for label, (_, model) in runs.items()}
    fig = save_small_png(colorization_figure(models, test.images[picks], args.k, args.seed),
                         args.fig_dir / f"{args.prefix}-colorizations.png")
    # transfer: the 6 most colourful held-out images as sources (a grey source has no colour scheme to
    # transfer), onto 6 fixed targets spread over the split
    src = colorfulness(test.images.float() / 255).argsort(descending=True)[:6].tolist()
    tgt = [min(n - 1, round(n * (2 * i + 1) / 12)) for i in range(len(src))]  # (a split under 6 images: fewer)
    tr = save_small_png(transfer_figure(models[cages[0]], test.images[src], test.images[tgt]),
                        args.fig_dir / f"{args.prefix}-transfer.png")
    print(markdown_table(result))
    print(f"wrote {args.json}, {fig} ({fig.stat().st_size // 1024} KB), {tr} ({tr.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
