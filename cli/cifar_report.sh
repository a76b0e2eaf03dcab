#!/usr/bin/env bash
# Figures and tables of docs/results.md from the runs of cli/cifar_sweep.sh (no training).
#
#   bash cli/cifar_report.sh [OUT_ROOT] [FIGURES_DIR]
#
#   FIGURES_DIR/cifar10-10k/   the main table: every metric, policy and fraction from 10,000 images,
#                              plus score correlations, cluster/class overlap, class balance, extremes
#   FIGURES_DIR/start-sizes/   every run of the three starting sizes (2k, 10k, 50k): error against size
set -euo pipefail
out_root=${1:-runs}
figures=${2:-docs/figures/results}
classes=${CLASSES:-airplane,cat,dog,ship}

datadiet report "$out_root"/cifar10-10k/cells/*/run \
  -m "$out_root/cifar10-10k/scored-el2n.parquet" -m "$out_root/cifar10-10k/scored-forgetting.parquet" \
  -m "$out_root/cifar10-10k/clustered.parquet" --classes "$classes" -o "$figures/cifar10-10k"
datadiet report "$out_root"/cifar10-{2k,10k,50k}/cells/*/run -o "$figures/start-sizes"
