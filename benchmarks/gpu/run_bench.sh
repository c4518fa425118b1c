#!/usr/bin/env bash
# ON THE DEVICE, after `source benchmarks/gpu/recv.sh`: the HF backend's throughput (issue 5) and,
# when its wheels arrived, the peers measured in the same process (lm-eval's HF model; TRL).
#   bash benchmarks/gpu/run_bench.sh backends|lmeval|trl
# Sizes come from the environment: GSM8K (200), MMLU questions (125 = 500 log-likelihood requests),
# LMEVAL_MMLU (500 questions), LMEVAL_GSM8K (100), TRL_STEPS (60).
set -uo pipefail
OUT=${OUT:-${GPU_ROOT:-/tmp/gpu}/out}
mkdir -p "$OUT"
case "${1:-backends}" in
  backends)
    python3 benchmarks/bench_backends.py --backends hf --gsm8k "${GSM8K:-200}" --mmlu "${MMLU:-125}" \
      --data-dir "$EVALSUITE_DATA_DIR" 2>&1 | tee "$OUT/bench_backends.log" ;;
  lmeval)
    python3 benchmarks/gpu/gpu_patches.py hf_vs_lmeval --data-dir "$EVALSUITE_DATA_DIR" \
      --mmlu-questions "${LMEVAL_MMLU:-500}" --gsm8k "${LMEVAL_GSM8K:-100}" --batch-size "${LMEVAL_BS:-64}" 2>&1 | tee "$OUT/bench_hf_vs_lmeval.log" ;;
  trl)
    python3 benchmarks/gpu/gpu_patches.py train_vs_trl --steps "${TRL_STEPS:-60}" --data-dir "$EVALSUITE_DATA_DIR" \
      --trainers "${TRAINERS:-evalsuite,trl,trl-packing}" 2>&1 | tee "$OUT/bench_train_vs_trl.log" ;;
esac
