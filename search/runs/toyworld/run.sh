#!/usr/bin/env bash
# The recorded toy-world tuning run (toy BLIP + toy CLIP, one CPU thread). From the repo root:
#   bash search/runs/toyworld/run.sh
# Tune on world seed 1 (label-free: only image-level labels reach the reward), evaluate on the
# held-out world seed 2 and on the tuning images themselves. Resumable: rerun after an interruption.
set -euo pipefail
D=search/runs/toyworld
TUNE_IMAGES=${TUNE_IMAGES:-200}
EVAL_IMAGES=${EVAL_IMAGES:-300}
COMMON=(--dataset toyworld --threads 1)

for reward in binary continuous; do
  pnpovss tune "${COMMON[@]}" --seed 0 --world-seed 1 --images "$TUNE_IMAGES" --iters 34 \
    --reward "$reward" --cache-dir /tmp/pnpovss-toy-cache --out "$D/$reward"
done

pnpovss eval "${COMMON[@]}" --seed 2 --images "$EVAL_IMAGES" --json "$D/eval_default_seed2.json"
pnpovss eval "${COMMON[@]}" --seed 1 --images "$TUNE_IMAGES" --json "$D/eval_default_seed1.json"
for reward in binary continuous; do
  pnpovss eval "${COMMON[@]}" --seed 2 --images "$EVAL_IMAGES" --preset "$D/$reward/best.json" \
    --json "$D/eval_${reward}_seed2.json"
  pnpovss eval "${COMMON[@]}" --seed 1 --images "$TUNE_IMAGES" --preset "$D/$reward/best.json" \
    --json "$D/eval_${reward}_seed1.json"
done

python bench/reward_correlation.py --seed 1 --images "${CORR_IMAGES:-100}" --configs 32 --threads 1 \
  --json "$D/reward_correlation.json" > /dev/null
