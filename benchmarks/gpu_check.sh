#!/usr/bin/env bash
# The GPU figures of issue 18 (item 5) in one prepared script; nothing in lrprec needs a GPU.
#   benchmarks/gpu_check.sh OUT [DEVICE]      DEVICE: cuda (default) or cpu (a dry run of the script)
# Measures, each against a baseline of the same run where one exists:
#   1. VGG-16 training at 224 px: pairs/s of `lrprec train` (2 epochs of STEPS steps, the second reported);
#   2. LRP on VGG-16 at PAIRS pairs, 224 px: each composite's time / a plain forward+backward
#      (benchmarks/bench_explain.py --sections vgg);
#   3. a 1-process DDP run under torchrun (nccl on CUDA, gloo on CPU): pairs/s beside run 1's;
#   4. (issue 28) ResNet-18/50 and ViT-B/16: training pairs/s and LRP cost at 224 px;
#   5. (issue 28) test accuracy of SmallCNN, resnet-small and vit-small on the default 64 px catalog.
# Sizes come from the environment (defaults sized for one H200; for a CPU dry run use e.g.
# ITEMS=60 STEPS=1 BATCH=2 PAIRS=1). Logs and runs land in OUT.
set -euo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT [cuda|cpu]}
DEV=${2:-cuda}
PY=${PY:-.venv/bin/python}
ITEMS=${ITEMS:-400}; STEPS=${STEPS:-20}; BATCH=${BATCH:-32}; PAIRS=${PAIRS:-64}
mkdir -p "$OUT"
[ -f "$OUT/cat224/items.parquet" ] || "$PY" -m lrprec synth "$OUT/cat224" --items "$ITEMS" --pairs "$ITEMS" --image-size 224 --seed 0 > "$OUT/synth.log" 2>&1
common=(--backbone vgg16 --epochs 2 --steps-per-epoch "$STEPS" --batch-size "$BATCH" --recon-weight 0 --seed 0)

"$PY" -m lrprec train "$OUT/cat224" --out "$OUT/vgg" --device "$DEV" "${common[@]}" > "$OUT/vgg.log" 2>&1
"$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m lrprec train "$OUT/cat224" --out "$OUT/ddp" \
    --device "$([ "$DEV" = cuda ] && echo auto || echo cpu)" "${common[@]}" > "$OUT/ddp.log" 2>&1
"$PY" - "$OUT" "$DEV" <<'EOF'
import json, sys
out, dev = sys.argv[1], sys.argv[2]
one = json.load(open(f"{out}/vgg/history.json"))["epochs"][-1]["pairs_per_second"]
ddp = json.load(open(f"{out}/ddp/history.json"))["epochs"][-1]["pairs_per_second"]
print(f"VGG-16 224 px training on {dev}: {one:.1f} pairs/s in one process; under torchrun (1 process, "
      f"{'nccl' if dev == 'cuda' else 'gloo'}): {ddp:.1f} pairs/s ({ddp / one:.2f}x)")
EOF
"$PY" benchmarks/bench_explain.py --sections vgg --device "$DEV" --pairs "$PAIRS" --threads 1 | tee "$OUT/explain.txt"
# 4. issue 28: ResNet-18/50 and ViT-B/16 — training pairs/s at 224 px, and LRP (ε-z⁺-flat, ε-γ-box) / a plain
#    forward+backward at PAIRS pairs, 224 px (benchmarks/bench_backbones.py; target ≤ 1.3× for ε-z⁺-flat)
for bb in resnet18 resnet50 vit-b16; do
  "$PY" -m lrprec train "$OUT/cat224" --out "$OUT/$bb" --device "$DEV" --backbone "$bb" --epochs 2 --steps-per-epoch "$STEPS" \
      --batch-size "$BATCH" --recon-weight 0 --seed 0 > "$OUT/$bb.log" 2>&1
  "$PY" -c "import json,sys; e=json.load(open(sys.argv[1]))['epochs'][-1]; print(sys.argv[2], 'training at 224 px:', round(e['pairs_per_second'], 1), 'pairs/s')" \
      "$OUT/$bb/history.json" "$bb" | tee -a "$OUT/backbones.txt"
done
"$PY" benchmarks/bench_backbones.py --backbones resnet18,resnet50,vit-b16 --size 224 --pairs "$PAIRS" --device "$DEV" --threads 1 | tee -a "$OUT/backbones.txt"
# 5. issue 28: test accuracy on the default 64 px synthetic catalog (seed 0, default settings, 20 epochs) of SmallCNN,
#    resnet-small and vit-small (also vit-small at lr 1e-3): the small backbones against SmallCNN (target: within 2 points)
[ -f "$OUT/cat64/items.parquet" ] || "$PY" -m lrprec synth "$OUT/cat64" --seed 0 > "$OUT/synth64.log" 2>&1
for spec in "small" "resnet-small" "vit-small" "vit-small --lr 0.001"; do
  name=$(echo "$spec" | tr ' ' '_')
  "$PY" -m lrprec train "$OUT/cat64" --out "$OUT/acc_$name" --device "$DEV" --seed 0 --backbone $spec > "$OUT/acc_$name.log" 2>&1
  "$PY" -m lrprec evaluate "$OUT/acc_$name" --json > "$OUT/acc_$name.json"
  "$PY" -c "import json,sys; d=json.load(open(sys.argv[1]))['overall']; print(sys.argv[2], '64 px catalog, seed 0: test accuracy', round(100*d['accuracy'], 2), 'AUC', round(d['auc'], 4))" \
      "$OUT/acc_$name.json" "$spec" | tee -a "$OUT/backbones.txt"
done
