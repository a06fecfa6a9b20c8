#!/usr/bin/env bash
# The recorded toy-world tuning run (toy BLIP + toy CLIP, one CPU thread). From the repo root:
#   bash search/runs/toyworld/run.sh          (9 min on a quiet machine; ~35 min on a 2-core machine shared
#                                             with other jobs; most of it the reward-correlation bench)
# Tune on world seed 1 (label-free: only image-level labels reach the reward), evaluate on the
# held-out world seed 2 and on the tuning images themselves. Resumable: rerun after an interruption.
set -euo pipefail
D=search/runs/toyworld
TUNE_IMAGES=${TUNE_IMAGES:-200}
EVAL_IMAGES=${EVAL_IMAGES:-300}
COMMON=(--dataset toyworld --threads 1)
TUNE=(tune "${COMMON[@]}" --seed 0 --world-seed 1 --images "$TUNE_IMAGES" --iters 34 --cache-dir "${CACHE_DIR:-/tmp/pnpovss-toy-cache}")

evaluate() {  # evaluate PRESET_ARGS NAME: held-out seed 2 and the tuning images (seed 1)
  pnpovss eval "${COMMON[@]}" --seed 2 --images "$EVAL_IMAGES" $1 --json "$D/eval_$2_seed2.json"
  pnpovss eval "${COMMON[@]}" --seed 1 --images "$TUNE_IMAGES" $1 --json "$D/eval_$2_seed1.json"
}

evaluate "" default
for rule in reference half; do   # the reward's mask rule: the reference code's (default) and ours (--reward-mask half)
  P=$([ "$rule" = reference ] && echo "" || echo "${rule}_")
  for reward in binary continuous; do
    R="$P$reward"
    pnpovss "${TUNE[@]}" --reward "$reward" --reward-mask "$rule" --out "$D/$R"   # the paper's argmax (--min-z 0, default)
    mkdir -p "$D/${R}_minz2"                                                    # same trials, significance guard:
    cp "$D/$R/run.json" "$D/$R/trace.jsonl" "$D/${R}_minz2/"                    # replayed, not recomputed
    pnpovss "${TUNE[@]}" --reward "$reward" --reward-mask "$rule" --out "$D/${R}_minz2" --min-z 2
    evaluate "--preset $D/$R/best.json" "$R"
    evaluate "--preset $D/${R}_minz2/best.json" "${R}_minz2"
  done
done

python bench/reward_correlation.py --seed 1 --images "${CORR_IMAGES:-100}" --configs 32 --threads 1 \
  --json "$D/reward_correlation.json" > /dev/null
