#!/usr/bin/env bash
# One seed of the guidance experiment (README "Explanation-guided training"): a shortcut catalog,
# an unguided and an LRP-guided model in the setting the README table was measured in (K = 10,
# metric head, category negatives, no ranking loss, no warm-up, 10 epochs), then both shortcut
# reports (explanation, behaviour, independent explainer). The two trainings run side by side.
# Usage: experiments/guidance_seed.sh OUT [SEED]      (about 10 minutes on 2 CPU cores)
set -euo pipefail
OUT=${1:?usage: guidance_seed.sh OUT [SEED]}; S=${2:-0}
LRPREC=${LRPREC:-lrprec}
mkdir -p "$OUT"
[ -d "$OUT/sc-$S" ] || $LRPREC synth "$OUT/sc-$S" --spurious 0.9 --seed "$S"
common=(--seed "$S" --dim 10 --head metric --negatives category --rank-weight 0 --warmup-epochs 0 --recon-weight 0 --epochs 10)
OMP_NUM_THREADS=1 $LRPREC train "$OUT/sc-$S" --out "$OUT/unguided-$S" "${common[@]}" > "$OUT/unguided-$S.log" 2>&1 &
OMP_NUM_THREADS=1 $LRPREC train "$OUT/sc-$S" --out "$OUT/guided-$S" "${common[@]}" --guide lrp > "$OUT/guided-$S.log" 2>&1 &
wait
for v in unguided guided; do
  $LRPREC shortcut "$OUT/$v-$S" --json > "$OUT/$v-$S.json"
  $LRPREC shortcut "$OUT/$v-$S"
done
