#!/usr/bin/env bash
# The field's CIFAR-10 protocol on one GPU: ResNet-18 (CIFAR stem), 10 % kept, random crop and
# flip, bfloat16 autocast; rows random, herding (prune's default), ccs and dual.
#
#   benchmarks/cifar10_gpu.sh ~/data/cifar10 runs/c10-gpu          # seed 0 (about 6 min on one H100)
#   benchmarks/cifar10_gpu.sh ~/data/cifar10 runs/c10-gpu 0,1,2    # resumes: computes seeds 1 and 2 only
#
# The folder is the CIFAR-10 JPEG image folders (train/<class>/, test/<class>/) that `folder:`
# reads. Each call resumes OUT, so seeds can be added one call at a time. Put the summary
# (OUT/results.md) and the card in docs/results.md. The environment may shrink the run for a
# smoke test on a CPU: DEVICE=cpu AMP= MODEL=lenet WARMUP_EPOCHS=1 TRAIN_EPOCHS=1.
set -euo pipefail
data=${1:?usage: benchmarks/cifar10_gpu.sh CIFAR10_FOLDER OUT [SEEDS]}
out=${2:?usage: benchmarks/cifar10_gpu.sh CIFAR10_FOLDER OUT [SEEDS]}
seeds=${3:-0}
resume=()
if [ -e "$out/config.json" ]; then resume=(--resume); fi
prune=${PRUNE:-prune}
$prune bench --dataset "folder:$data" --model "${MODEL:-resnet18}" \
  --methods random,herding,ccs,dual --fractions 0.1 --seeds "$seeds" --no-full \
  --warmup-epochs "${WARMUP_EPOCHS:-10}" --train-epochs "${TRAIN_EPOCHS:-200}" --lr 0.1 --batch-size 128 \
  --augment standard ${AMP---amp} --device "${DEVICE:-cuda}" --out "$out" "${resume[@]}"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed 's/^/card: /' || true
