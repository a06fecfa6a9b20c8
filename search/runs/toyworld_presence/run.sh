#!/usr/bin/env bash
# The recorded toy-world presence tuning run (toy BLIP, one CPU thread). From the repo root, in the venv:
#   bash search/runs/toyworld_presence/run.sh          (~10 min on a shared 2-core machine, most of it eval)
# Tune presence_threshold on world seed 1 with image-level labels only (per-image tag F1 over the whole
# vocabulary, --reward tags), then evaluate the default and the tuned preset with no labels at test time
# (--labels detect) on the held-out world seed 2. Resumable: rerun after an interruption.
set -euo pipefail
D=search/runs/toyworld_presence
COMMON=(--dataset toyworld --threads 1)
pnpovss tune "${COMMON[@]}" --seed 0 --world-seed 1 --images 200 --reward tags --iters 20 --out "$D/tags"
pnpovss eval "${COMMON[@]}" --seed 2 --images 300 --labels detect --json "$D/eval_default_seed2.json"
pnpovss eval "${COMMON[@]}" --seed 2 --images 300 --labels detect --preset "$D/tags/best.json" \
  --json "$D/eval_tags_seed2.json"
