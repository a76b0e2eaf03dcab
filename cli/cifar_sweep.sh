#!/usr/bin/env bash
# The CIFAR-10 results of docs/results.md: every number there comes from this script.
#
#   bash cli/cifar_sweep.sh CIFAR10_TREE [OUT_ROOT]
#
# CIFAR10_TREE holds train/ and test/ ImageFolder trees (../shared/data/cifar10-jpg.tar.gz unpacked).
# Three starting datasets, each pruned, balanced, trained and evaluated on the 10,000 test images:
#   OUT_ROOT/cifar10-10k  1,000 images per class; random, el2n, forgetting, proto_dist, sup_proto_dist,
#                         keep hard and easy, fractions 0.8 0.6 0.4 0.2, plus the full 10k
#   OUT_ROOT/cifar10-2k   200 per class (a scarce-data start); random and el2n
#   OUT_ROOT/cifar10-50k  the whole train set (an abundant start); random and el2n at 0.2 and 0.8
# Seed 0 of everything runs first, then seed 1, then seed 2, so a cut-short run still covers every cell once.
# Recipe: `fast` (smallcnn) shortened to 8 epochs for every model, so the whole sweep fits a 2-core CPU in
# about two hours; EL2N probes 4 epochs, forgetting probes 8, 3 probes each.
# Two cells at a time with one thread each (measured faster than one cell with two threads on 2 cores).
set -euo pipefail
tree=${1:?usage: bash cli/cifar_sweep.sh CIFAR10_TREE [OUT_ROOT]}
out_root=${2:-runs}
here=$(cd "$(dirname "$0")" && pwd)
encoder=${ENCODER:-$here/../../shared/models/efficientnet_lite0_imagenet.pt2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
jobs=${JOBS:-2}
epochs=${EPOCHS:-8}

sweep() {  # OUT SEED extra make variables...
  local out=$1 seed=$2
  shift 2
  local started=$SECONDS
  make -f "$here/Makefile" sweep -j"$jobs" DATASET="$tree" OUT="$out" SEEDS="$seed" \
    TRAIN_ARGS="--recipe fast --epochs $epochs" "$@"
  echo "$(date -u +%FT%TZ) $out seed $seed: $((SECONDS - started)) s" | tee -a "$out_root/sweep-times.log"
}

mkdir -p "$out_root"
for seed in 0 1 2; do
  sweep "$out_root/cifar10-10k" "$seed" PER_CLASS=1000 \
    METRICS="el2n forgetting proto_dist sup_proto_dist" FRACTIONS="0.8 0.6 0.4 0.2" \
    PROBES=3 PROBE_EPOCHS=4 PROBE_EPOCHS_forgetting=$epochs CLUSTER_ARGS="--encoder $encoder --image-size 64"
  sweep "$out_root/cifar10-2k" "$seed" PER_CLASS=200 METRICS="el2n" FRACTIONS="0.8 0.6 0.4 0.2" \
    PROBES=3 PROBE_EPOCHS=4
  sweep "$out_root/cifar10-50k" "$seed" METRICS="el2n" FRACTIONS="0.2 0.8" FULL=no PROBES=3 PROBE_EPOCHS=4
done
