#!/usr/bin/env bash
# Train the embedded model in one process (global batch 8), then with FSDP (training/configs/fsdp.yaml)
# in 2 processes (2 x 4 rows, same seed), resume the FSDP run from its half-way sharded checkpoint,
# and compare the saved weights (from_pretrained) of the three. On 2+ GPUs: bf16, NCCL; without GPUs:
# fp32 on 2 CPU processes (gloo).
# Usage: bash training/configs/check_sharded.sh [WORK_DIR]   (STEPS=20 by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-$(mktemp -d)}
steps=${STEPS:-20}
# 280 rows of GeoQuery-SQL (its dev set, as training rows): batches of 8 never reach an epoch's uneven
# end, where accelerate repeats rows so that every process has a batch (one process would not)
rows=$(python -c "from symgen_datasets.tasks import get_task; print(get_task('geoquery_sql').references_path())")
if python -c "import sys, torch; sys.exit(torch.cuda.device_count() < 2)"; then
    precision=(--bf16); launch_precision=bf16; tolerance=1e-2
else
    precision=(); launch_precision=no; tolerance=1e-5
fi
common=(--dataset "$rows" --task geoquery_sql --model embedded --max-steps "$steps" --eval-strategy no
        --learning-rate 1e-4 --seed 3 --save-steps $((steps / 2)) "${precision[@]}")
python -m symgen_datasets.cli train "${common[@]}" --output-dir "$work/one" --per-device-train-batch-size 8
fsdp=(accelerate launch --config_file "$here/fsdp.yaml" --num_processes 2 --mixed_precision "$launch_precision")
"${fsdp[@]}" "$root/training/finetune.py" "${common[@]}" --output-dir "$work/fsdp" --per-device-train-batch-size 4
mkdir -p "$work/resumed/checkpoints"
cp -r "$work/fsdp/checkpoints/checkpoint-$((steps / 2))" "$work/resumed/checkpoints/"
"${fsdp[@]}" "$root/training/finetune.py" "${common[@]}" --output-dir "$work/resumed" --per-device-train-batch-size 4 \
    --resume-from-checkpoint latest
python - "$work" "$tolerance" <<'PY'
import json
import sys

import torch
from transformers import AutoModelForCausalLM

work, tolerance = sys.argv[1], float(sys.argv[2])
one = AutoModelForCausalLM.from_pretrained(f"{work}/one", dtype=torch.float32).state_dict()
from symgen_datasets.generators.local import prepare_embedded_model

base = AutoModelForCausalLM.from_pretrained(prepare_embedded_model(), dtype=torch.float32).state_dict()
print(f"one process: largest change from the base model: {max((one[k] - base[k]).abs().max().item() for k in one):.2e}")
failed = False
for name in ("fsdp", "resumed"):
    training = json.load(open(f"{work}/{name}/symgen_task_model.json"))["training"]
    other = AutoModelForCausalLM.from_pretrained(f"{work}/{name}", dtype=torch.float32).state_dict()
    diff = max((one[k] - other[k]).abs().max().item() for k in one)
    failed |= diff >= tolerance or training["distributed_type"] != "fsdp"
    print(f"{name} ({training['distributed_type']}, {training['num_processes']} processes on {training['device']}): "
          f"largest weight difference from the one-process run: {diff:.2e} (tolerance {tolerance:.0e})")
sys.exit(1 if failed else 0)
PY
