"""Data path timings: first load (decode + write the cache), second load (memory-mapped cache), batches/s.

    python benchmarks/data_path.py --data-root ../shared/data --datasets cifar10 tinyimagenet

Each dataset's first load runs with an empty cache folder (a fresh temporary
XDG_CACHE_HOME; the data root itself should be read-only or have no
``agelab-cache/``, otherwise pass ``--clear`` to delete its entries for the
dataset first). The second load is timed in a fresh subprocess, so nothing is
reused from the first process's memory, but the operating system's page cache is
warm (as it is for a run started after another). "data path" is what the trainer
does per iteration without the networks: index a random batch of uint8 images,
convert to float in [-1, 1] and to channels-last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time, torch
from agelab.data import load_dataset, to_float
from agelab.trainer import BatchOrder
name, split, size, root, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
t0 = time.perf_counter()
data = load_dataset(name, split, size, root, allow_download=False, progress=False)
load_s = time.perf_counter() - t0
out = {"load_s": load_s, "n": len(data), "shape": list(data.images.shape)}
if batches:
    order = BatchOrder(len(data), 64, 0)
    images = data.images
    t0 = time.perf_counter()
    for i in range(batches):
        x = to_float(images[order.indices(i)]).contiguous(memory_format=torch.channels_last)
    out["batches_per_s"] = batches / (time.perf_counter() - t0)
    out["images_per_s"] = out["batches_per_s"] * 64
print(json.dumps(out))
"""


def child(args, env, name, batches):
    cmd = [sys.executable, "-c", CHILD, name, "train", str(args.image_size[name]), args.data_root, str(batches)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{name}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'failed'}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True, help="folder with the datasets (e.g. ../shared/data)")
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "tinyimagenet"], help="datasets to time")
    ap.add_argument("--batches", type=int, default=2000, help="batches of 64 for the data-path timing")
    ap.add_argument("--threads", type=int, default=0, help="OMP/torch threads in the children (0 = default)")
    ap.add_argument("--clear", action="store_true", help="delete this dataset's entries in <data-root>/agelab-cache first")
    args = ap.parse_args()
    args.image_size = {"cifar10": 32, "svhn": 32, "mnist": 32, "fashion-mnist": 32}
    args.image_size.update({d: 64 for d in ("tinyimagenet", "celeba", "cars")})
    from agelab.cpu import describe_cpu

    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {describe_cpu()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print("| dataset | images | first load (decode + cache) s | second load (cache) s | speed-up | data path img/s |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        if args.clear:
            cache = os.path.join(args.data_root, "agelab-cache")
            for f in os.listdir(cache) if os.path.isdir(cache) else []:
                if f.startswith(f"{name}-"):
                    os.remove(os.path.join(cache, f))
        with tempfile.TemporaryDirectory() as xdg:
            env = dict(os.environ, XDG_CACHE_HOME=xdg)
            env.pop("AGELAB_DATA", None)
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            first = child(args, env, name, 0)
            second = child(args, env, name, args.batches)
        print(f"| {name} train {args.image_size[name]}px | {first['n']} | {first['load_s']:.1f} | "
              f"{second['load_s']:.2f} | {first['load_s'] / second['load_s']:.0f}x | {second['images_per_s']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
