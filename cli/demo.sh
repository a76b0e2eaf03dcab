#!/usr/bin/env bash
# The datadiet demo: a whole pruning pipeline on built-in data (scikit-learn's digits), on a CPU in minutes.
#
#   ingest -> score (EL2N from 3 probe models) -> prune (keep hard / easy / random, 50%)
#          -> balance -> train -> evaluate, plus the full data as the reference.
#
# Usage: bash cli/demo.sh [OUT_DIR]        (default: demo_out; every step is a file you can inspect)
set -euo pipefail
OUT=${1:-demo_out}
FRACTION=${FRACTION:-0.5}
SEED=${SEED:-0}
# Digits are 8x8: a flipped or shifted digit is often another digit, so no augmentation.
TRAIN=(--recipe fast --augment none --seed "$SEED" --quiet)
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "ingest the built-in digits (train and test splits)"
datadiet ingest builtin:digits --split train -o "$OUT/train.parquet"
datadiet ingest builtin:digits --split test -o "$OUT/test.parquet"

step "score: EL2N from 3 probe models, 4 epochs each (the paper: 10 probes, 20 epochs)"
datadiet score "$OUT/train.parquet" -o "$OUT/scored.parquet" --metric el2n --probes 3 --probe-epochs 4 \
  --recipe fast --augment none --seed "$SEED"

step "train on all the data (the reference)"
datadiet train "$OUT/train.parquet" -o "$OUT/runs/full" "${TRAIN[@]}"
datadiet evaluate "$OUT/runs/full" "$OUT/test.parquet" --quiet

for KEEP in hard easy random; do
  step "prune: keep the $KEEP ${FRACTION} by el2n, balance classes, train, evaluate"
  datadiet prune "$OUT/scored.parquet" -o "$OUT/kept-$KEEP.parquet" --score el2n --keep "$KEEP" \
    --fraction "$FRACTION" --seed "$SEED"
  datadiet balance "$OUT/kept-$KEEP.parquet" -o "$OUT/balanced-$KEEP.parquet"
  datadiet train "$OUT/balanced-$KEEP.parquet" -o "$OUT/runs/$KEEP" "${TRAIN[@]}"
  datadiet evaluate "$OUT/runs/$KEEP" "$OUT/test.parquet" --quiet
done

step "results on the $(python -c "import pyarrow.parquet as pq; print(pq.read_metadata('$OUT/test.parquet').num_rows)") test digits"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'policy':<10}{'kept':>8}{'top-1':>9}{'top-5':>9}{'loss':>8}")
for name in ("full", "hard", "easy", "random"):
    report = json.loads((out / "runs" / name / "eval.json").read_text())
    config = json.loads((out / "runs" / name / "config.json").read_text())
    kept = config["manifest"]["rows"]
    print(f"{name:<10}{kept:>8}{report['top1']:>9.3f}{report['top5']:>9.3f}{report['loss']:>8.3f}")
PY
