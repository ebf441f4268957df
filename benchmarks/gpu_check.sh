#!/usr/bin/env bash
# The GPU check: everything posttrain can only show on a CUDA machine, in one script.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]     (default OUT_DIR: runs/gpu_check)
#
#   1. the `gpu`-marked tests (QLoRA 4-bit loading, vLLM-backed rollouts);
#   2. SFT of the small stand-in model on 2 processes under FSDP and under DeepSpeed ZeRO-2
#      (recipes/accelerate/, bf16), 20 steps each, then one eval of each result;
#   3. `posttrain rollout` with the vLLM backend against HF generate, same prompts and settings;
#   4. bf16 SDPO and GRPO steps, with peak GPU memory and seconds per step for every teacher kind,
#      LoRA student included (benchmarks/sdpo_step.py --bf16 --lora);
#   5. SDPO on 2 processes under FSDP2 and ZeRO-3 with the sharded copy teachers (ema,
#      trust_region; each run writes a checkpoint, whose teacher is gathered from the shards), and
#      with a LoRA student and its lora_ema teacher;
#      SDPO sampling through vLLM in colocate mode and against a `trl vllm-serve` server
#      (benchmarks/with_vllm_server.sh starts and stops it);
#   6. SDPO's peak memory and step time against GRPO at V = 152k, 1,024 and 4,096 tokens
#      (benchmarks/sdpo_memory.py --bf16).
#
# Every command is printed before it runs ("+ ..."), its output goes to OUT_DIR/<name>.log, and a
# summary table (status and wall time per check) is printed at the end; the script carries on past
# a failed check and exits non-zero if any failed. --dry-run prints the commands and runs nothing
# (the test suite runs it on the CPU). Setup first: `make setup`, then `pip install -e '.[gpu]'`
# for vLLM and bitsandbytes, and `pip install deepspeed` for the ZeRO-2 run.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

declare -a NAMES STATUSES SECONDS_TAKEN
FAILED=0

# check NAME COMMAND...: print it, run it (output to OUT/NAME.log and the terminal), record the result
check() {
  local name=$1
  shift
  echo
  echo "== $name"
  echo "+ $*"
  local status=dry-run start=$SECONDS
  if [[ $DRY_RUN == 0 ]]; then
    if "$@" 2>&1 | tee "$OUT/$name.log"; then status=passed; else status=FAILED; FAILED=1; fi
  fi
  NAMES+=("$name")
  STATUSES+=("$status")
  SECONDS_TAKEN+=($((SECONDS - start)))
}

if [[ $DRY_RUN == 0 ]] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU found (nvidia-smi -L failed); use --dry-run to see the commands" >&2
  exit 2
fi
GPUS=2
if [[ $DRY_RUN == 0 ]]; then GPUS=$(nvidia-smi -L | wc -l); fi

check environment "$PY" -c "import torch, transformers, trl, accelerate, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(), torch.cuda.get_device_name(0)); print('transformers', transformers.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)"

check gpu_tests "$PY" -m pytest -m gpu -v -p no:cacheprovider -rA

check model "$PY" -m posttrain.cli make-model --out "$OUT/model" --preset small --seed 0

# 2 processes (or 1 on a single-GPU machine: then FSDP/ZeRO-2 run unsharded, which still checks the
# wiring); accelerate's flags before -m override the recipe's 8 processes
PROCS=$((GPUS >= 2 ? 2 : 1))
SFT_ARGS=(sft --model_name_or_path "$OUT/model" --dataset_name task:arithmetic --dataset_train_split "train[:2000]"
          --max_steps 20 --per_device_train_batch_size 16 --learning_rate 1e-3 --bf16 true --logging_steps 5
          --save_strategy steps --save_steps 10)
for launcher in fsdp deepspeed_zero2; do
  check "sft_$launcher" "$PY" -m accelerate.commands.launch --config_file "recipes/accelerate/$launcher.yaml" \
    --num_processes "$PROCS" -m posttrain.cli "${SFT_ARGS[@]}" --output_dir "$OUT/sft_$launcher"
  check "eval_$launcher" "$PY" -m posttrain.cli eval --model_name_or_path "$OUT/sft_$launcher" \
    --output_dir "$OUT/eval_$launcher" --num_examples 200 --dtype bfloat16
done

# the same rollouts through HF generate and through vLLM (the summary's seconds compare them)
for backend in hf vllm; do
  check "rollouts_$backend" "$PY" -m posttrain.cli rollout --model_name_or_path "$OUT/sft_fsdp" --backend "$backend" \
    --dataset_split "train[:512]" --num_samples 8 --temperature 0.7 --max_new_tokens 48 --batch_size 64 \
    --output_dir "$OUT/rollouts_$backend"
done

# SDPO on 2 processes under FSDP2 and ZeRO-3 with the copy teachers, sharded like the student
for launcher in fsdp deepspeed_zero3; do
  for teacher in ema trust_region; do
    check "sdpo_${teacher}_$launcher" "$PY" -m accelerate.commands.launch --config_file "recipes/accelerate/$launcher.yaml" \
      --num_processes "$PROCS" -m posttrain.cli sdpo --model_name_or_path "$OUT/model" --max_steps 10 \
      --per_device_train_batch_size 16 --num_generations 8 --max_completion_length 48 --bf16 true --logging_steps 1 \
      --save_strategy steps --save_steps 5 --teacher "$teacher" --output_dir "$OUT/sdpo_${teacher}_$launcher"
  done
done

# ... and with the teacher that shares the sharded base (lora_ema)
for launcher in fsdp deepspeed_zero3; do
  check "sdpo_lora_ema_$launcher" "$PY" -m accelerate.commands.launch --config_file "recipes/accelerate/$launcher.yaml" \
    --num_processes "$PROCS" -m posttrain.cli sdpo --model_name_or_path "$OUT/model" --max_steps 10 \
    --per_device_train_batch_size 16 --num_generations 8 --max_completion_length 48 --bf16 true --logging_steps 1 \
    --save_strategy no --use_peft true --teacher lora_ema --output_dir "$OUT/sdpo_lora_ema_$launcher"
done

# SDPO sampling through vLLM, both modes: an engine in the training process, then a `trl vllm-serve` server
SDPO_ARGS=(sdpo --model_name_or_path "$OUT/model" --max_steps 10 --per_device_train_batch_size 16 --num_generations 8
           --max_completion_length 48 --bf16 true --logging_steps 1 --save_strategy no --use_vllm true)
check sdpo_vllm_colocate "$PY" -m posttrain.cli "${SDPO_ARGS[@]}" --vllm_mode colocate --vllm_gpu_memory_utilization 0.3 \
  --output_dir "$OUT/sdpo_vllm_colocate"
check sdpo_vllm_server bash benchmarks/with_vllm_server.sh "$OUT/model" 8011 "$PY" -m posttrain.cli "${SDPO_ARGS[@]}" \
  --vllm_mode server --vllm_server_host 127.0.0.1 --vllm_server_port 8011 --output_dir "$OUT/sdpo_vllm_server"

check sdpo_grpo_bf16 "$PY" benchmarks/sdpo_step.py --model "$OUT/model" --bf16 --lora --steps 8 --batch 64 --skip-trl
# SDPO's chunked distillation against GRPO and the full-logits path at Qwen's vocabulary (peak allocated memory)
check sdpo_memory "$PY" benchmarks/sdpo_memory.py --bf16 --vocab 151936 --lengths 1024 4096 --max_full_logits_gb 30 \
  --json "$OUT/sdpo_memory.json"

echo
echo "== summary (logs in $OUT/)"
printf '%-22s %-8s %8s\n' check status seconds
for i in "${!NAMES[@]}"; do
  printf '%-22s %-8s %8s\n' "${NAMES[$i]}" "${STATUSES[$i]}" "${SECONDS_TAKEN[$i]}"
done
exit $FAILED
