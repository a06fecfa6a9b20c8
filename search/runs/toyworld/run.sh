#!/usr/bin/env bash
# The recorded toy-world tuning run (toy BLIP + toy CLIP, one CPU thread). From the repo root:
#   bash search/runs/toyworld/run.sh          (about 40 min on a 2-core machine shared with other jobs)
# Tune label-free (only image-level labels reach the reward) on the images of world seeds 3 and 4,
# each with its own random-search seed; evaluate every preset on the held-out world seed 7.
# Per tuning seed: the default reward/space/selection (boundary, search/spaces/default.json, argmax),
# the same trials selected with --min-z 2 (replayed, not recomputed), the earlier default reward
# (contrast) the same two ways, the paper's reward with argmax on the same space (same seed and space:
# the same proposals), and the paper's reward with argmax on the earlier default space
# (search/spaces/layer_head.json). Resumable: rerun after an interruption.
set -euo pipefail
D=search/runs/toyworld
TUNE_SEEDS=${TUNE_SEEDS:-"3 4"}
HELD_OUT=7
TUNE_IMAGES=${TUNE_IMAGES:-100}
EVAL_IMAGES=${EVAL_IMAGES:-300}
ITERS=${ITERS:-60}
COMMON=(--dataset toyworld --threads 1)

evaluate() {  # evaluate PRESET_ARGS NAME: held-out world seed 7
  [ -f "$D/eval_$2_seed$HELD_OUT.json" ] || \
    pnpovss eval "${COMMON[@]}" --seed "$HELD_OUT" --images "$EVAL_IMAGES" $1 --json "$D/eval_$2_seed$HELD_OUT.json"
}

evaluate "" default
for s in $TUNE_SEEDS; do
  R=$D/seed$s
  TUNE=(tune "${COMMON[@]}" --seed "$s" --world-seed "$s" --images "$TUNE_IMAGES" --cache-dir "${CACHE_DIR:-/tmp/pnpovss-toy-cache}")
  for reward in boundary contrast; do                                            # boundary: the default
    pnpovss "${TUNE[@]}" --iters "$ITERS" --reward $reward --out "$R/$reward"    # argmax (the default)
    mkdir -p "$R/${reward}_minz2"                                                # same trials, significance guard
    cp "$R/$reward/run.json" "$R/$reward/trace.jsonl" "$R/${reward}_minz2/"
    pnpovss "${TUNE[@]}" --iters "$ITERS" --reward $reward --out "$R/${reward}_minz2" --min-z 2
  done
  pnpovss "${TUNE[@]}" --iters "$ITERS" --reward binary --out "$R/binary"        # the paper's reward, argmax
  pnpovss "${TUNE[@]}" --iters 34 --reward binary --space search/spaces/layer_head.json --out "$R/binary_layer_head"
  for run in boundary boundary_minz2 contrast contrast_minz2 binary binary_layer_head; do
    evaluate "--preset $R/$run/best.json" "seed${s}_$run"
  done
done

python bench/reward_correlation.py --seed 1 --images "${CORR_IMAGES:-60}" --configs 32 --threads 1 --diagnose \
  --json "$D/reward_correlation.json" > /dev/null
python bench/reward_correlation.py --seed 2 --images "${CORR_IMAGES:-60}" --configs 48 --threads 1 \
  --json "$D/reward_correlation_seed2.json" > /dev/null
