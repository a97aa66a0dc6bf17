"""The GPU pilot behind the colorization presets: short cage / pix2pix runs on Stanford Cars, compared.

Run on one H100 (2026-11-26, 8 minutes of device time) with

    python scripts/colorization_pilot.py --data-root DIR_WITH_stanford-cars --device cuda --budget 330 \\
        --out OUT_DIR

It trains each configuration below in turn (skipping the rest once ``--budget`` seconds have passed),
reads the colorization metrics each run writes into summary.json (512 held-out images, K = 8), and
writes OUT_DIR/results.json and OUT_DIR/pilot-grid.png (six held-out inputs per configuration: gray,
then 8 colorizations). The results are in docs/figures/cars-colorization-gpu-pilot.json and
docs/results.md ("Colorization (Stanford Cars)").
"""

import argparse
import json
import time
from pathlib import Path

import torch

import agelab
from agelab.colorize import colorization_rows
from agelab.config import SWAPPED, TrainConfig
from agelab.data import load_dataset
from agelab.sampling import save_grid
from agelab.trainer import train

PAPER = dict(mu=10.0, lam=1000.0, enc_latent_recon=0.0, gen_image_recon=0.0)
CONFIGS = [
    ("cage-swapped-b64-600", dict(model="cage", batch_size=64, iterations=600, **SWAPPED)),
    ("cage-paper-b64-600", dict(model="cage", batch_size=64, iterations=600, **PAPER)),
    ("pix2pix-w32-b64-600", dict(model="pix2pix", width=32, batch_size=64, iterations=600)),
    ("cage-swapped-b32-1200", dict(model="cage", batch_size=32, iterations=1200, **SWAPPED)),
    ("cage-paper-b32-1200", dict(model="cage", batch_size=32, iterations=1200, **PAPER)),
    ("cage-swapped100-b64-600", dict(model="cage", batch_size=64, iterations=600,
                                     **dict(SWAPPED, gen_image_recon=100.0))),
    ("cage-swapped-b64-4000", dict(model="cage", batch_size=64, iterations=4000, **SWAPPED)),
    ("pix2pix-w32-b64-4000", dict(model="pix2pix", width=32, batch_size=64, iterations=4000)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, help="folder with stanford-cars/ (the offline copy)")
    ap.add_argument("--device", default="cuda", help="cuda or cpu (default: cuda)")
    ap.add_argument("--budget", type=float, default=330, help="start no new configuration after this many seconds")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and pilot-grid.png")
    ap.add_argument("--iterations", type=int, help="override every configuration's iterations (a dry run)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    base = dict(dataset="cars", data_root=args.data_root, image_size=64, latent_dim=3, width=16, res_blocks=4,
                device=args.device, out_dir=str(args.out / "runs"), log_every=50, sample_every=100000,
                ckpt_every=100000)
    test = load_dataset("cars", "test", 64, args.data_root).images
    pick = test[[0, 3, 7, 11, 20, 33]].to(args.device)
    results, rows = {}, []
    for name, over in CONFIGS:
        if time.time() - t0 > args.budget:
            results[name] = "skipped (time)"
            continue
        over = dict(over, iterations=args.iterations or over["iterations"])
        t = time.time()
        run = train(TrainConfig(**dict(base, **over, tag=name)).validate(), progress=False)
        summary = json.loads((run / "summary.json").read_text())
        last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
        results[name] = {"seconds": round(time.time() - t, 1), "metrics": summary["colorization"], "last_log": last}
        rows.append(colorization_rows(agelab.load(run, device=args.device), pick, k=8, seed=0).cpu())
        save_grid(torch.cat(rows), args.out / "pilot-grid.png", nrow=9)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        print(name, results[name]["seconds"], flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
