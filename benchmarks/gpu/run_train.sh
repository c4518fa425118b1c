#!/usr/bin/env bash
# ON THE DEVICE, after `source benchmarks/gpu/recv.sh`: the SFT loop on a real base model (issue 7).
#   bash benchmarks/gpu/run_train.sh [CONFIG] [extra `evalsuite train` arguments]
# Writes env.txt, train.log, train_summary.md and run.tgz (the run dir without weights) to $OUT.
set -uo pipefail
CFG=$(realpath "${1:-benchmarks/gpu/train_gemma_gpu.yaml}")
HERE=$(dirname "$(realpath "$0")")
shift || true
OUT=${OUT:-${GPU_ROOT:-/tmp/gpu}/out}
RUNS=${GPU_ROOT:-/tmp/gpu}/runs
mkdir -p "$OUT" "$RUNS"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__)") 2>&1 | tee "$OUT/env.txt"
t0=$(date +%s)
# run outside the checkout: with the repo root on sys.path, `python -m` (and the asynchronous
# scorer's child process) would import the source folder evalsuite/, which lacks the plugin
# packages that the installed wheel maps in (evalsuite.tasks, evalsuite.trainers, ...)
mkdir -p "${GPU_ROOT:-/tmp/gpu}/work" && cd "${GPU_ROOT:-/tmp/gpu}/work"
# stop a little before the device's per-call limit so the summary below still gets written
timeout "${TRAIN_TIMEOUT:-500}" python3 -m evalsuite.cli train "$CFG" --output-dir "$RUNS" --fresh "$@" 2>&1 | tee "$OUT/train.log"
rc=$?
echo "[run_train] exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train.log"
name=$(ls -t "$RUNS" | head -1)
python3 "$HERE/summarize_train.py" "$RUNS/$name" 2>&1 | tee "$OUT/train_summary.md"
tar czf "$OUT/run.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' --exclude='*.gguf' --exclude='tokenizer*.json' -C "$RUNS" "$name"
exit $rc
