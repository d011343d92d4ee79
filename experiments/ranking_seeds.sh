#!/usr/bin/env bash
# Issue 19's measurements: the default model on the default synthetic catalog, three seeds, its baselines,
# and the seed-0 ablations (training negatives, head, ranking loss, appearance loss). Writes OUT/<name>.json reports;
# experiments/summarize_ranking.py turns them into the README/BENCHMARKS tables.
# Usage: experiments/ranking_seeds.sh OUT [SEEDS...]    (about 40 minutes on 2 CPU cores)
set -euo pipefail
OUT=${1:?usage: ranking_seeds.sh OUT [SEEDS...]}; shift
SEEDS=${*:-0 1 2}
LRPREC=${LRPREC:-lrprec}
mkdir -p "$OUT"
for s in $SEEDS; do
  [ -d "$OUT/data-$s" ] || $LRPREC synth "$OUT/data-$s" --seed "$s"
  for v in default frozen; do
    extra=(); [ "$v" = frozen ] && extra=(--freeze-backbone)
    [ -f "$OUT/run-$v-$s/config.json" ] || $LRPREC train "$OUT/data-$s" --out "$OUT/run-$v-$s" --seed "$s" "${extra[@]}"
    $LRPREC evaluate "$OUT/run-$v-$s" --json > "$OUT/$v-$s.json"
  done
  for b in random popularity category-tree; do
    $LRPREC baseline "$OUT/data-$s" --method "$b" --seed "$s" --json > "$OUT/$b-$s.json"
  done
  # WNN (McAuley 2015) on the features of the frozen, randomly initialized backbone
  $LRPREC baseline "$OUT/data-$s" --method wnn --run "$OUT/run-frozen-$s" --seed "$s" --json > "$OUT/wnn-$s.json"
done
if [[ " $SEEDS " == *" 0 "* ]]; then
  for v in "negatives-category:--negatives category" "head-metric:--head metric" "rank-0:--rank-weight 0" "recon-0:--recon-weight 0"; do
    name=${v%%:*}; args=${v#*:}
    [ -f "$OUT/run-$name-0/config.json" ] || $LRPREC train "$OUT/data-0" --out "$OUT/run-$name-0" --seed 0 $args
    $LRPREC evaluate "$OUT/run-$name-0" --json > "$OUT/$name-0.json"
  done
fi
