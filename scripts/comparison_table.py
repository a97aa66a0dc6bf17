"""The table of docs/comparison.md from evaluated run folders (eval.json + metrics.jsonl + config.json).

    python scripts/comparison_table.py RUN [RUN ...]

One markdown row per run: model, dataset, iterations/epochs, seconds per epoch (from the
median of the logged img/s windows, so a few slow windows do not count), the features of the
sample metrics (agelab's domain classifier or the standard FID Inception, and the number of
samples), FID and KID with their real-data floors, precision/recall, test reconstruction L1/PSNR, linear-probe
test errors and the AIS log-likelihood with its standard error where it was computed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

TRAIN_IMAGES = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000}


def _recipe(cfg: dict) -> str:
    """Which AGE game a run's config.json trained: the paper's (with or without the adaptive adversary weight)
    or the swapped recipe, and its divergence when it is not that recipe's own."""
    scale = cfg.get("game_scale", "sum")  # config.json files written before the option mean "sum"
    if cfg.get("mu", 10.0) == 0 and cfg.get("gen_image_recon", 0.0) > 0:
        name, own = "swapped", "gaussian"
    else:
        name = "paper, adaptive adversary" if cfg.get("adaptive_adversary") else "paper"
        own = "gaussian_reference" if scale == "mean" else "gaussian"
    divergence = cfg.get("divergence", own)
    if divergence != own:
        name += ", reference KL" if divergence == "gaussian_reference" else f", {divergence}"
    return name


def _metric(metrics: dict, name: str, fmt: str, floor: bool = False) -> str:
    e = metrics.get(name)
    if e is None:
        return "—"
    text = format(e["value"], fmt)
    if floor and e.get("floor"):
        text += f" ({format(e['floor']['value'], fmt)})"
    return text


def row(run: Path, eval_file: str = "eval.json") -> str:
    cfg = json.loads((run / "config.json").read_text())
    ev = json.loads((run / eval_file).read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["img_per_s"] for r in records if "img_per_s" in r]
    n_train = TRAIN_IMAGES.get(cfg["dataset"], ev.get("n_train"))
    s_epoch = n_train / statistics.median(rates) if rates else float("nan")
    epochs = ev["step"] * cfg["batch_size"] / n_train
    m = ev["metrics"]
    ll = ev.get("log_likelihood")
    ll_text = f"{ll['value']:.1f} ± {ll['std_error']:.1f}" if ll else "—"
    model = cfg.get("model", "age")
    if model in ("age", "cage"):
        model += f" ({_recipe(cfg)})"
    fid = m.get("fid") or {}
    features = "Inception" if str(fid.get("extractor", "")).startswith("inception") else "domain"
    n_fake = f", {fid['n_fake']:,} samples" if fid.get("n_fake") else ""
    cells = [model, cfg["dataset"], f"{ev['step']} ({epochs:.1f})", f"{s_epoch:.0f}", features + n_fake,
             _metric(m, "fid", ".2f", True), _metric(m, "kid", ".4f", True), _metric(m, "precision", ".2f"),
             _metric(m, "recall", ".2f"), _metric(m, "recon_l1", ".3f"), _metric(m, "recon_psnr", ".1f"),
             _metric(m, "recon_label_accuracy", ".3f"),
             _metric(m, "probe_code_all_labels", ".3f"), _metric(m, "probe_code_1000_labels", ".3f"), ll_text]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| model | data | iterations (epochs) | s/epoch | features | FID (floor) | KID (floor) | precision | "
          "recall | recon L1 | recon PSNR | label kept by g(e(x)) | probe error, all labels | probe error, "
          "1,000 labels | AIS log p(x), nats |")


def paired_log_likelihood(base: Path, other: Path, eval_file: str = "eval.json") -> str | None:
    """log p(x) of ``base`` minus ``other`` over the same AIS test images, with the paired standard error."""
    a, b = (json.loads((r / eval_file).read_text()).get("log_likelihood") for r in (base, other))
    if not a or not b or a["n_images"] != b["n_images"] or a["image_seed"] != b["image_seed"]:
        return None
    d = [x - y for x, y in zip(a["per_image"], b["per_image"])]
    return f"{statistics.mean(d):+.1f} ± {statistics.stdev(d) / len(d) ** 0.5:.1f} nats (paired, {len(d)} images)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--eval-file", default="eval.json",
                    help="name of the evaluation file in each run folder (default: eval.json; e.g. a copy of an "
                         "`agelab eval --features inception` result kept beside the domain one)")
    args = ap.parse_args()
    print(HEADER)
    print("|" + " --- |" * (HEADER.count("|") - 1))
    for run in args.runs:
        print(row(run, args.eval_file))
    base = args.runs[0]
    for run in args.runs[1:]:  # the same test images: paired differences are far tighter than the per-run errors
        diff = paired_log_likelihood(base, run, args.eval_file)
        if diff:
            print(f"\nlog p(x): {base.name} - {run.name} = {diff}", end="")
    print()


if __name__ == "__main__":
    main()
