#!/usr/bin/env bash
# Rebuilds the bundled 128x128 model pair from scratch: data, VQGAN, base and large GPTs, evaluation,
# shipping, all on a 2-core CPU within one working session (each GPT in at most 150 minutes). Run it again
# after an interruption anywhere and it continues:
#  - a stage whose output is committed (recipes/bundled/manifest.tsv, assets/models/bundled-*) is skipped;
#  - a training stage resumes from its last checkpoint in $RUNS (or starts again on a new machine).
# The data set is rebuilt when data/bundled is missing (about 5 minutes) and checked against the committed
# manifest. Stage times on the project's 2-core CPU are in recipes/bundled/times.log and the model cards.
#
# Sizing (python -m bench.training and the logs of `painter train`; AMD EPYC with AVX-512 BF16, bf16 autocast,
# batch 16):
#   - what teaches these GPTs is passes over each picture (demo-large: 1,830 pictures x 48 passes paints its
#     subjects; the first bundled-base: 11,173 x 5 passes does not);
#   - tokens per pass of a picture: 256 image codes; the compact set trains on 3,300 pictures (~4.93 captions
#     each: 4, and one in everyday words since 2026-12-03 evening; the shipped models' first stages had the 4);
#   - large (4x192) trains at ~4,400 image tokens/s on one core beside another run, ~6,500 on two threads;
#     40 passes = 33.8 M tokens = 87 min on two threads -> EPOCHS_LARGE = 40 / 4.93 = 8. The shipped large had
#     five stages of at most 116 min each (130 passes) and a sixth with reworded captions (`more`, below);
#   - base (three of large's blocks, 3x192) at ~5,500 on one core beside large: 25 passes = 20.8 M tokens =
#     63 min -> EPOCHS_BASE = 5 (measured on 2026-12-03 evening beside large's sixth stage: a median 5,541,
#     61 min; large's sixth stage, `REWORD=0.5 more bundled-large 4`, 4,321 and 63 min).
#   Measured on 2026-12-03 (the runs' logs): a 4x128 base 6,354 tokens/s, 45 min; large 4,241 beside it and
#   5,271 on two threads (shared with tests for a while), 116 min. The second stage (INIT=, after the VQGAN's
#   white code), the same day: large 5 epochs in 77 min (one core beside base, then two at ~6,900 tokens/s).
#   On a GPU, recipes/bundled-gpu.sh trains the GPTs on the --full set instead (FULL=1), then runs this
#   recipe, which finds them trained and converts, evaluates and ships them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RUNS=${RUNS:-runs}
FULL=${FULL:-}  # 1: the 11k-picture --full set, whose GPTs a GPU trains (recipes/bundled-gpu.sh)
DATA=data/bundled${FULL:+-full}
MANIFEST=recipes/bundled/manifest${FULL:+-full}.tsv
OUT=assets/models
EPOCHS_VQGAN=${EPOCHS_VQGAN:-5}
mkdir -p "$RUNS" recipes/bundled

stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a recipes/bundled/times.log; }

# 1. Data: the pictures are drawn from pinned packages; the manifest (ids, captions, PNG hashes) is committed.
if [[ ! -s $DATA/train.tsv ]]; then
  stamp "data: start"
  $PY -m painter data bundled --output "$DATA" ${FULL:+--full}
  stamp "data: done"
fi
if [[ -s $MANIFEST ]]; then
  $PY -m painter.data.manifest check "$MANIFEST" "$DATA/manifest.tsv"
else
  cp "$DATA/manifest.tsv" "$MANIFEST"
  [[ -n $FULL ]] || cp "$DATA/ATTRIBUTION.md" "$DATA/probe.tsv" recipes/bundled/
fi

# 2. The shared VQGAN: 128x128 pictures, 16x16 codes (f8), trained on 64-pixel crops.
if [[ ! -s $OUT/bundled-vqgan/vqgan.safetensors ]]; then
  stamp "vqgan: start"
  $PY -m painter -q train-vqgan --train "$DATA/train.tsv" --valid "$DATA/valid.tsv" --output "$RUNS/bundled-vqgan" \
    --config f8 --crop 64 --epochs "$EPOCHS_VQGAN" --batch-size 16 --lr 4e-4 --warmup-steps 100 \
    --save-every 100 --eval-every 500 --resume
  $PY -m painter convert "$RUNS/bundled-vqgan/vqgan" "$OUT/bundled-vqgan" --dtype fp16
  stamp "vqgan: done"
fi
# 2b. Its white code: every white cell is encoded as one code (VQGANConfig.white_code), chosen on 400 training
#     pictures; without it white backgrounds, half of all cells, come out as ~50 interchangeable codes a picture.
if ! grep -q '"white_code": [0-9]' "$OUT/bundled-vqgan/config.json"; then
  stamp "white code: start"
  $PY -m painter.training.white_code "$OUT/bundled-vqgan" "$DATA/train.tsv"
  stamp "white code: done"
fi

# 3-4. Each GPT, when trained: told what its captions were (the wordpieces and the pairs of them side by side,
#      `--learnt-from`, which prompts are read through) and its domain words, then its recommended sampling
#      (recipes/sampling_sweep.py, on prompts read as the studio reads them), shipped in fp16 beside the shared
#      VQGAN, evaluated with 4 seeds on training captions, held-out (subject, style) pairs and paraphrases, and
#      described by its model card. `recipes/bundled-models.sh ship SIZE` runs only this for one trained GPT.
#      The sweep paints 200 prompts a set outside the 100 the evaluation scores, the evaluation those 100 (4 seeds
#      each; on one core about 35 and 5 minutes), so that base ships on one core while large trains on the other.
ship() {
  local size=$1 run=$RUNS/$1
  [[ -s $OUT/$size/model.safetensors ]] && return 0
  [[ -s $RUNS/$size-more/model/config.json ]] && run=$RUNS/$size-more  # its further stage, when it has one
  rm -rf "$RUNS/$size-read"
  $PY -m painter convert "$run/model" "$RUNS/$size-read" --to painter --learnt-from "$DATA/train.tsv" \
    $($PY -m painter.data.manifest words "$DATA/manifest.tsv")
  settle "$RUNS/$size-read" "$size"
}
# settle MODEL SIZE: MODEL (reading prompts as the studio does) swept, written to $OUT/SIZE in fp16 beside the
# shared VQGAN with the chosen settings, evaluated and described (a card rewritten where the runs are absent).
settle() {
  local from=$1 size=$2 chosen settings
  stamp "$size: sweep"
  # a failed sweep stops here (set -e), before anything in $OUT is replaced
  chosen=$(PYTHONPATH=. $PY recipes/sampling_sweep.py --model "$from" --data "$DATA" --unseen 100 \
    --output "$RUNS/$size-sweep.json")
  read -r -a settings <<< "$chosen"
  rm -rf "$OUT/$size.new"
  $PY -m painter convert "$from" "$OUT/$size.new" --to painter --dtype fp16 --shared-vqgan "$OUT/bundled-vqgan" \
    ${settings[@]/#/--sampling=}
  [[ ! -s $OUT/$size/README.md ]] || cp "$OUT/$size/README.md" "$OUT/$size.new/"
  rm -rf "$OUT/$size" && mv "$OUT/$size.new" "$OUT/$size"
  $PY -m painter eval --model "$OUT/$size" --valid "$DATA/valid.tsv" --captions-from "$DATA/train.tsv" \
    --heldout "$DATA/heldout.tsv" --paraphrase "$DATA/paraphrase.tsv" --seeds 4 --captions 100 \
    > "$RUNS/$size-eval.json"
  MANIFEST=$MANIFEST PYTHONPATH=. $PY recipes/model_card.py "$size" "$RUNS" "$OUT"
  stamp "$size: shipped (${settings[*]})"
}
if [[ ${1:-} == ship ]]; then
  ship "$2"
  exit
fi
# `recipes/bundled-models.sh resettle SIZE`: the sweep, settings, evaluation and card again for a shipped GPT
# (weights unchanged), also where its training runs are not: how the shipped pair got the sweep's settings on
# 2026-12-04 (commit the model folder afterwards).
if [[ ${1:-} == resettle ]]; then
  [[ -s $OUT/${2:-}/config.json ]] || { echo "resettle: no shipped model $OUT/${2:-} (bundled-large or bundled-base)" >&2; exit 2; }
  settle "$OUT/$2" "$2"
  exit
fi
# `recipes/bundled-models.sh more SIZE EPOCHS`: a further stage for a trained GPT, continued from its run's
# weights into $RUNS/SIZE-more (resumable; run it again after an interruption), which ships instead (remove
# $OUT/SIZE first). How the shipped bundled-large got its third stage (`more bundled-large 9`, two threads alone).
# REWORD=P wraps captions in everyday words with probability P at each step (`painter train --reword`).
if [[ ${1:-} == more ]]; then
  stamp "$2: further stage, $3 epochs${REWORD:+, reworded $REWORD}"
  OMP_NUM_THREADS=${THREADS:-2} $PY -m painter -q train --model "$RUNS/$2/model" --train "$DATA/train.tsv" \
    --valid "$DATA/valid.tsv" --output "$RUNS/$2-more" --epochs "$3" --batch-size 16 --lr 5e-4 --warmup-steps 100 \
    --weight-decay 0.01 --caption-dropout 0.1 --reword "${REWORD:-0}" --save-every 100 --eval-every 1000 --resume
  stamp "$2: further stage done"
  exit
fi
# bundled-base: three of bundled-large's four blocks (0, 1 and 3: removing block 2 raised large's training loss
# least, to 3.2 nats, against 3.4-18 for the others) trained on into $RUNS/bundled-base-more, which ships. A
# 4x128 GPT trained from scratch did not learn its subjects here (R@1 0.13 after 76 passes, 0.14 after 116);
# from large's blocks base has less to learn and is still a quarter lighter per step. Alone:
# `recipes/bundled-models.sh base-from-large EPOCHS` (THREADS=1 beside another run).
base_from_large() {
  local from=$RUNS/bundled-large/model
  [[ -s $from/config.json ]] || from=$OUT/bundled-large  # on a machine that has only the shipped weights
  stamp "bundled-base: from bundled-large's blocks 0,1,3, $1 epochs${REWORD:+, reworded $REWORD}"
  OMP_NUM_THREADS=${THREADS:-2} $PY -m painter -q train --model "$from" --keep-layers 0,1,3 \
    --train "$DATA/train.tsv" --valid "$DATA/valid.tsv" --output "$RUNS/bundled-base-more" --epochs "$1" \
    --batch-size 16 --lr 5e-4 --warmup-steps 100 --weight-decay 0.01 --caption-dropout 0.1 --reword "${REWORD:-0}" \
    --save-every 100 --eval-every 1000 --resume
  stamp "bundled-base: done"
}
if [[ ${1:-} == base-from-large ]]; then
  base_from_large "$2"
  exit
fi

# Large first, on both cores; then base from its blocks (above), with captions reworded in both last stages.
VQGAN=$OUT/bundled-vqgan  # the shared one, with its white code (the run's own has none)
EPOCHS_BASE=${EPOCHS_BASE:-5}
EPOCHS_LARGE=${EPOCHS_LARGE:-8}
export REWORD=${REWORD:-0.5}
# INIT=DIR continues large from DIR/bundled-large/model (the run of an earlier recipe on the same VQGAN before
# it had a white code) instead of starting from scratch, given the white code: how the shipped large was
# retrained (INIT=runs-plain EPOCHS_LARGE=5; the model cards list every stage).
export INIT=${INIT:-}
init_model() {  # $RUNS/SIZE-init: DIR/SIZE/model with the shared VQGAN's config (its white code)
  [[ -s $RUNS/$1-init/config.json ]] && return 0
  rm -rf "$RUNS/$1-init.tmp" && cp -r "$INIT/$1/model" "$RUNS/$1-init.tmp"
  $PY -c 'import json, sys; c = json.load(open(sys.argv[1])); c["vqgan"] = json.load(open(sys.argv[2]))["vqgan"]
json.dump(c, open(sys.argv[1], "w"), indent=2)' "$RUNS/$1-init.tmp/config.json" "$VQGAN/config.json"
  mv "$RUNS/$1-init.tmp" "$RUNS/$1-init"
}
if [[ ! -s $OUT/bundled-large/model.safetensors ]]; then
  from=(--vqgan "$VQGAN" --size bundled-large) lr=1e-3 warmup=200
  if [[ -n $INIT ]]; then
    init_model bundled-large
    from=(--model "$RUNS/bundled-large-init") lr=5e-4 warmup=100
  fi
  stamp "bundled-large: start"
  OMP_NUM_THREADS=2 $PY -m painter -q train "${from[@]}" --train "$DATA/train.tsv" --valid "$DATA/valid.tsv" \
    --output "$RUNS/bundled-large" --epochs "$EPOCHS_LARGE" --batch-size 16 --lr "$lr" --warmup-steps "$warmup" \
    --weight-decay 0.01 --caption-dropout 0.1 --reword "$REWORD" --save-every 100 --eval-every 500 --resume
  stamp "bundled-large: done"
fi
[[ -s $OUT/bundled-base/model.safetensors || -s $RUNS/bundled-base-more/model/config.json ]] ||
  base_from_large "$EPOCHS_BASE"
ship bundled-large
ship bundled-base
