#!/usr/bin/env bash
# On a machine with 2+ GPUs: train the embedded model 20 steps in one process (global batch 8),
# then with FSDP on 2 GPUs (2 x 4 rows, same seed), resume the FSDP run from its step-10
# checkpoint, and compare the saved weights (from_pretrained) of the three.
# Usage: bash training/configs/check_sharded.sh [WORK_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-$(mktemp -d)}
demos=$(python -c "from symgen_datasets.tasks import get_task; print(get_task('geoquery_sql').packaged / '10_shot.jsonl')")
common=(--dataset "$demos" --task geoquery_sql --model embedded --max-steps 20 --eval-strategy no --learning-rate 1e-4
        --seed 3 --save-steps 10 --bf16)
python -m symgen_datasets.cli train "${common[@]}" --output-dir "$work/one" --per-device-train-batch-size 8
accelerate launch --config_file "$here/fsdp.yaml" --num_processes 2 "$root/training/finetune.py" "${common[@]}" \
    --output-dir "$work/fsdp" --per-device-train-batch-size 4
mkdir -p "$work/resumed/checkpoints"
cp -r "$work/fsdp/checkpoints/checkpoint-10" "$work/resumed/checkpoints/"
accelerate launch --config_file "$here/fsdp.yaml" --num_processes 2 "$root/training/finetune.py" "${common[@]}" \
    --output-dir "$work/resumed" --per-device-train-batch-size 4 --resume-from-checkpoint latest
python - "$work" <<'PY'
import sys
import torch
from transformers import AutoModelForCausalLM
work = sys.argv[1]
one = AutoModelForCausalLM.from_pretrained(f"{work}/one", dtype=torch.float32).state_dict()
for name in ("fsdp", "resumed"):
    other = AutoModelForCausalLM.from_pretrained(f"{work}/{name}", dtype=torch.float32).state_dict()
    diff = max((one[k] - other[k]).abs().max().item() for k in one)
    print(f"{name}: largest weight difference from the one-process run: {diff:.2e}")
PY
