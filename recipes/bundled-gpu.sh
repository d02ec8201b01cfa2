#!/usr/bin/env bash
# The bundled pair's GPT stages on a lent GPU instead of the CPU: both GPTs trained on the --full data set
# (about 11,200 pictures in six emoji styles), in one script of at most 8 minutes; the CPU then converts,
# evaluates and ships them with the same stage as recipes/bundled-models.sh.
#
#   bash recipes/bundled-gpu.sh prepare   # CPU: the full data set and its codes ($RUNS/gpu/*.codes.pt, a few MB)
#   bash recipes/bundled-gpu.sh train     # GPU, carrying $RUNS/gpu: writes $RUNS/gpu/bundled-{base,large}
#   bash recipes/bundled-gpu.sh ship      # CPU: sweep, fp16, evaluation and model card of each (it replaces the
#                                         # shipped pair: git rm assets/models/bundled-{base,large} first)
#
# The GPU machine reaches no registry, so it gets the codes (`painter encode`), not the pictures. Sizing:
# the full set trains on ~10,100 pictures, ~3.6 captions each; 40 passes for large and 20 for base are
# 11 and 5.5 epochs of rows, ~100 M and ~50 M image tokens, within minutes at a GPU's ~1 M tokens/s (batch 128,
# bf16). Not yet run on a GPU: no GPU was lent while it was written; the CPU stages it feeds are tested.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RUNS=${RUNS:-runs}
GPU=$RUNS/gpu
DATA=data/bundled-full
VQGAN=assets/models/bundled-vqgan
EPOCHS_BASE=${EPOCHS_BASE:-5.5}
EPOCHS_LARGE=${EPOCHS_LARGE:-11}
mkdir -p "$GPU"

case ${1:-} in
  prepare)
    [[ -s $DATA/train.tsv ]] || $PY -m painter data bundled --full --output "$DATA"
    for split in train valid; do
      [[ -s $GPU/$split.codes.pt ]] || $PY -m painter -q encode "$DATA/$split.tsv" --vqgan "$VQGAN" \
        --output "$GPU/$split.codes.pt"
    done ;;
  train)
    for size in bundled-base bundled-large; do
      epochs=$EPOCHS_BASE; [[ $size == bundled-large ]] && epochs=$EPOCHS_LARGE
      $PY -m painter -q train --vqgan "$VQGAN" --size "$size" --train "$GPU/train.codes.pt" \
        --valid "$GPU/valid.codes.pt" --output "$GPU/$size" --epochs "$epochs" --batch-size 128 --lr 2e-3 \
        --warmup-steps 100 --weight-decay 0.01 --caption-dropout 0.1 --save-every 200 --eval-every 500 \
        --device cuda --resume
    done ;;
  ship)
    for size in bundled-base bundled-large; do
      FULL=1 RUNS=$GPU bash recipes/bundled-models.sh ship "$size"
    done ;;
  *)
    echo "usage: bash recipes/bundled-gpu.sh prepare|train|ship" >&2
    exit 2 ;;
esac
