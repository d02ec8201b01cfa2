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
# batch 16, one thread per GPT while both train):
#   - what teaches these GPTs is passes over each picture (demo-large: 1,830 pictures x 48 passes paints its
#     subjects; the first bundled-base: 11,173 x 5 passes does not);
#   - tokens per pass of a picture: 256 image codes; the compact set trains on 3,300 pictures (~4.93 captions
#     each: 4, and one in everyday words since 2026-12-03 evening; the shipped models' first stages had the 4);
#   - large (4x192) trains at ~4,400 image tokens/s on one core, base (4x128) at ~6,500;
#   - base, 20 passes: 3,300 x 20 x 256 / 6,500 = 2,600 s (44 min) -> EPOCHS_BASE = 20 / 4.93 = 4;
#   - large runs beside base and its shipping (~60 min at ~4,400), then alone on 2 threads (~6,500):
#     40 passes = 33.8 M tokens = 3,600 s x 4,400 + 2,770 s x 6,500 (106 min) -> EPOCHS_LARGE = 40 / 4.93 = 8.
#   Measured on 2026-12-03 (the runs' logs): base 6,354 tokens/s, 45 min; large 4,241 beside base and 5,271 on
#   two threads (shared with tests for a while), 116 min.
#   The second stage (INIT=, after the VQGAN's white code), measured the same day: base 3 epochs in 36 min on
#   one core beside large, large 5 epochs in 77 min (one core beside base, then two at ~6,900 tokens/s).
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

# 3-4. Each GPT, when trained: its recommended sampling (recipes/sampling_sweep.py), shipped in fp16 beside the
#      shared VQGAN, evaluated with 4 seeds on training captions, held-out (subject, style) pairs and paraphrases,
#      and described by its model card. `recipes/bundled-models.sh ship SIZE` runs only this for one trained GPT.
#      The sweep reads 30 captions per set and the evaluation 100 (4 seeds each), so that base ships on one
#      core while large trains on the other.
ship() {
  local size=$1 run=$RUNS/$1 TOP_K TEMPERATURE GUIDANCE
  [[ -s $OUT/$size/model.safetensors ]] && return 0
  [[ -s $RUNS/$size-more/model/config.json ]] && run=$RUNS/$size-more  # its further stage, when it has one
  stamp "$size: sweep"
  read -r TOP_K TEMPERATURE GUIDANCE < <(PYTHONPATH=. $PY recipes/sampling_sweep.py --model "$run/model" \
    --data "$DATA" --captions 30 --output "$RUNS/$size-sweep.json")
  $PY -m painter convert "$run/model" "$OUT/$size" --to painter --dtype fp16 \
    --shared-vqgan "$OUT/bundled-vqgan" --sampling top_k="$TOP_K" --sampling temperature="$TEMPERATURE" \
    --sampling guidance_scale="$GUIDANCE" --learnt-from "$DATA/train.tsv" \
    $($PY -m painter.data.manifest words "$DATA/manifest.tsv")
  $PY -m painter eval --model "$OUT/$size" --valid "$DATA/valid.tsv" --captions-from "$DATA/train.tsv" \
    --heldout "$DATA/heldout.tsv" --paraphrase "$DATA/paraphrase.tsv" --seeds 4 --captions 100 \
    > "$RUNS/$size-eval.json"
  MANIFEST=$MANIFEST PYTHONPATH=. $PY recipes/model_card.py "$size" "$RUNS" "$OUT"
  stamp "$size: shipped (top-k $TOP_K, temperature $TEMPERATURE, guidance $GUIDANCE)"
}
if [[ ${1:-} == ship ]]; then
  ship "$2"
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
# `recipes/bundled-models.sh base-from-large EPOCHS`: bundled-base as three of bundled-large's four blocks (0, 1
# and 3: removing block 2 raised the training loss least, to 3.2 nats) trained on into $RUNS/bundled-base-more,
# which ships. A 4x128 GPT trained from scratch did not learn its subjects (R@1 0.13 after 76 passes, 0.14
# after 116); starting from large's weights, base has less to learn and is still a quarter lighter.
if [[ ${1:-} == base-from-large ]]; then
  stamp "bundled-base: from bundled-large's blocks 0,1,3, $2 epochs${REWORD:+, reworded $REWORD}"
  OMP_NUM_THREADS=${THREADS:-2} $PY -m painter -q train --model "$RUNS/bundled-large/model" --keep-layers 0,1,3 \
    --train "$DATA/train.tsv" --valid "$DATA/valid.tsv" --output "$RUNS/bundled-base-more" --epochs "$2" \
    --batch-size 16 --lr 5e-4 --warmup-steps 100 --weight-decay 0.01 --caption-dropout 0.1 --reword "${REWORD:-0}" \
    --save-every 100 --eval-every 1000 --resume
  stamp "bundled-base: done"
  exit
fi

# The two GPTs side by side, one core each (each saves a checkpoint on SIGTERM and resumes exactly). Base ships
# while large goes on; then large has both cores.
VQGAN=$OUT/bundled-vqgan  # the shipped one, with its white code (the run's own has none)
EPOCHS_BASE=${EPOCHS_BASE:-4}
EPOCHS_LARGE=${EPOCHS_LARGE:-8}
# INIT=DIR continues each GPT from DIR/SIZE/model (the runs of an earlier recipe on the same VQGAN before it
# had a white code) instead of starting from scratch, given the white code: how the shipped pair was retrained
# (INIT=runs-plain EPOCHS_BASE=3 EPOCHS_LARGE=5; the model cards list both stages).
export INIT=${INIT:-}
init_model() {  # $RUNS/SIZE-init: DIR/SIZE/model with the shared VQGAN's config (its white code)
  [[ -s $RUNS/$1-init/config.json ]] && return 0
  rm -rf "$RUNS/$1-init.tmp" && cp -r "$INIT/$1/model" "$RUNS/$1-init.tmp"
  $PY -c 'import json, sys; c = json.load(open(sys.argv[1])); c["vqgan"] = json.load(open(sys.argv[2]))["vqgan"]
json.dump(c, open(sys.argv[1], "w"), indent=2)' "$RUNS/$1-init.tmp/config.json" "$VQGAN/config.json"
  mv "$RUNS/$1-init.tmp" "$RUNS/$1-init"
}
train_gpt() {
  local from=(--vqgan "$VQGAN" --size "$1") lr=1e-3 warmup=200
  if [[ -n $INIT ]]; then
    init_model "$1"
    from=(--model "$RUNS/$1-init") lr=5e-4 warmup=100
  fi
  OMP_NUM_THREADS=$3 $PY -m painter -q train "${from[@]}" --train "$DATA/train.tsv" \
    --valid "$DATA/valid.tsv" --output "$RUNS/$1" --epochs "$2" --batch-size 16 --lr "$lr" --warmup-steps "$warmup" \
    --weight-decay 0.01 --caption-dropout 0.1 --save-every 100 --eval-every 500 --resume
}
if [[ ! -s $OUT/bundled-large/model.safetensors ]]; then
  stamp "gpts: start"
  if [[ ! -s $OUT/bundled-base/model.safetensors ]]; then
    train_gpt bundled-large "$EPOCHS_LARGE" 1 &
    large=$!
    train_gpt bundled-base "$EPOCHS_BASE" 1
    stamp "gpts: base done"
    OMP_NUM_THREADS=1 ship bundled-base
    # stop the training process itself (it saves a checkpoint), not only the subshell that started it: a
    # second run resumed beside the first once interleaved two runs in one directory (now also locked out)
    pkill -TERM -P "$large" 2>/dev/null || true
    wait "$large" || true
  fi
  train_gpt bundled-large "$EPOCHS_LARGE" 2
  stamp "gpts: large done"
fi
ship bundled-base
ship bundled-large
