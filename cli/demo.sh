#!/usr/bin/env bash
# The datadiet demo: the whole pruning pipeline on built-in data (scikit-learn's 8x8 digits),
# on a CPU in a few minutes, through the same Make recipes a real sweep uses (cli/Makefile):
#
#   ingest -> score (EL2N, 3 probe models)  -> prune (keep hard / easy, and random) -> balance
#          -> cluster (prototypes on pixels) -> train -> evaluate -> report
#
# plus a model on all the data as the reference. It ends with the results table; the figures and
# summary.md are in OUT_DIR/report.
#
# Usage: bash cli/demo.sh [OUT_DIR]        (default: demo_out; every step is a file you can inspect)
# Paper scale instead (CIFAR-10, ResNet-18, 200 epochs, on a GPU), same recipes:
#   make -f cli/Makefile report DATASET=cifar10/ OUT=runs/cifar10 RECIPE=cifar PROBE_EPOCHS=20 PROBES=10 \
#        METRICS="el2n forgetting proto_dist" FRACTIONS="0.9 0.8 0.7 0.6 0.5 0.4 0.3" TRAIN_ARGS="--recipe cifar --arch resnet18"
set -euo pipefail
OUT=${1:-demo_out}
here=$(cd "$(dirname "$0")" && pwd)
command -v make >/dev/null || { echo "error: the demo runs cli/Makefile and needs GNU make" >&2; exit 1; }

# Digits are 8x8: a flipped or shifted digit is often another digit, so no augmentation.
make -f "$here/Makefile" report OUT="$OUT" DATASET=builtin:digits \
  METRICS="el2n proto_dist" KEEPS="hard easy" FRACTIONS="0.5" SEEDS="0" \
  SCORE_ARGS="--probes 3 --probe-epochs 4 --recipe fast --augment none" \
  TRAIN_ARGS="--recipe fast --augment none"

printf '\n\033[1mtest accuracy on %s held-out digits (fraction 0.5 kept, seed 0)\033[0m\n' \
  "$(python -c "import pyarrow.parquet as pq; print(pq.read_metadata('$OUT/test.parquet').num_rows)")"
python - "$OUT/report/results.csv" <<'PY'
import csv, sys

rows = sorted(csv.DictReader(open(sys.argv[1])), key=lambda r: (-float(r["fraction"]), r["metric"], r["keep"]))
print(f"{'score':<16}{'keep':<8}{'kept':>6}{'top-1':>8}{'top-5':>8}")
for row in rows:
    score, keep = ("all data", "-") if row["metric"] == "none" else (row["metric"], row["keep"])
    print(f"{score:<16}{keep:<8}{row['rows']:>6}{float(row['top1']):>8.3f}{float(row['top5']):>8.3f}")
PY
echo "figures and summary: $OUT/report/"
