#!/usr/bin/env bash
# The authors' CIFAR-10 schedule on a GPU, as one prepared device run (docs/reproduction.md):
# the CUDA tests, then 150 epochs of `--preset cifar10 --recipe paper-adaptive` with the learning rate
# halved every 40 epochs and the paper's two generator updates per iteration (the authors' released CIFAR-10
# settings; the cifar10 preset makes one since 2026-12-04) and --cuda-graphs; what comes back
# ($OUT): the test log, the training log, metrics.jsonl, config.json, the grids, and the final
# checkpoint split into <16 MiB parts (device limits), to be joined and evaluated on a CPU:
#   cat OUT/ckpt.tar.part-* | tar -x -C runs/ && agelab eval runs/RUN --features inception
#
# On the development machine, once (the data does not travel otherwise; .devdata is git-ignored):
#   mkdir -p .devdata/cifar10 && cp ../shared/data/cifar10/cifar10-jpg.tar.gz .devdata/cifar10/
#   grep -qx '/.devdata/' .git/info/exclude || echo /.devdata/ >> .git/info/exclude
# then: run(command="bash scripts/device_cifar_paper.sh", carry=[".devdata"], timeout_s=600).
# The device image has torch, torchmetrics, safetensors, tqdm, scikit-learn, scipy, matplotlib and
# tensorboard; agelab runs from src/ without installing. DEVICE, EPOCHS and GRAPHS override the
# defaults for a dry run on a CPU (PY: a python with torch):
#   DEVICE=cpu EPOCHS=0.01 GRAPHS= PY=.venv/bin/python OUT=/tmp/o bash scripts/device_cifar_paper.sh
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/device-out}"; mkdir -p "$OUT"
DEVICE="${DEVICE:-cuda}"; EPOCHS="${EPOCHS:-150}"; GRAPHS="${GRAPHS---cuda-graphs}"; PY="${PY:-python3}"
PER_EPOCH=781  # 50,000 / 64
ITERS=$("$PY" -c "print(max(1, round($EPOCHS * $PER_EPOCH)))")
HALVE=$((40 * PER_EPOCH))
RUNS=/tmp/agelab-runs
date -u +"start %FT%TZ"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py > "$OUT/cuda-tests.log" 2>&1
  tail -2 "$OUT/cuda-tests.log"
fi
"$PY" -m agelab train --preset cifar10 --recipe paper-adaptive --n-gen-steps 2 --data-root .devdata \
  --device "$DEVICE" $GRAPHS \
  --iterations "$ITERS" --lr-halve-every "$HALVE" --log-every "$PER_EPOCH" --sample-every $((10 * PER_EPOCH)) \
  --ckpt-every "$ITERS" --out-dir "$RUNS" --tag paper-adaptive-150ep --no-progress > "$OUT/train.log" 2>&1
echo "train exit $?"; tail -3 "$OUT/train.log"
RUN=$(ls -d "$RUNS"/*-paper-adaptive-150ep | tail -1)
cp "$RUN/metrics.jsonl" "$RUN/config.json" "$OUT/" 2>/dev/null
"$PY" - "$RUN" "$OUT" <<'PY'
import sys
from pathlib import Path
from PIL import Image
run, out = Path(sys.argv[1]), Path(sys.argv[2])
tiles = [Image.open(run / n).convert("RGB") for n in ("samples.png", "reconstructions.png") if (run / n).exists()]
if tiles:  # one figure: samples | reconstructions
    w, h = sum(t.width for t in tiles) + 12 * (len(tiles) - 1), max(t.height for t in tiles)
    fig, x = Image.new("RGB", (w, h), "white"), 0
    for t in tiles:
        fig.paste(t, (x, 0)); x += t.width + 12
    fig.save(out / "grids.png", optimize=True)
PY
NAME=$(basename "$RUN"); LAST=$(ls "$RUN/checkpoints" | tail -1)  # the final checkpoint only
(cd "$RUNS" && tar -c "$NAME/config.json" "$NAME/summary.json" "$NAME/status.json" "$NAME/checkpoints/$LAST" \
   | split -b 15M - "$OUT/ckpt.tar.part-")
ls -la "$OUT"; date -u +"end %FT%TZ"
