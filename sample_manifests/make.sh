#!/usr/bin/env bash
# Regenerates the sample manifests (small, valid, committed) used by the README examples and tests.
# Usage: bash sample_manifests/make.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")"
datadiet ingest builtin:digits --split train -o digits_train.parquet --quiet
datadiet ingest builtin:digits --split test -o digits_test.parquet --quiet
datadiet score digits_train.parquet -o digits_scored.parquet --metric random --seed 0 --quiet
datadiet prune digits_scored.parquet -o digits_kept.parquet --score random --keep hard --fraction 0.3 --quiet
