#!/usr/bin/env bash
# Runs bench/train_bench.py on the lent GPU machine (one H200): the train stage's trainer side by
# side with plain TRL (trl_baseline.py), 1B and 8B shapes, SFT and DPO. Writes $OUT/train_bench.json
# and $OUT/train_bench.log. Fits 8 minutes: the main variants start only within MAIN_BUDGET s (300),
# then the extra flex_attention variant runs under `timeout` in what is left of TOTAL_S (480).
#
# The machine has torch, triton, accelerate, tokenizers, safetensors, pyarrow but not trl, datasets,
# liger-kernel, pydantic; transformers and peft there may be other versions. Fetch the wheels here
# once, in the repo root (.whl/ is git-ignored; ~20 MiB; torch cannot travel, the image's is used):
#
#   mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl \
#     transformers==5.24.0 trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
#     liger-kernel==0.8.5 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 typing_extensions==4.16.0
#   cp ../shared/bench/trl_baseline.py .whl/     # ../shared does not travel; .whl does
#
# (versions from constraints.txt; liger-kernel 0.8.5 is the newest on PyPI, needs torch>=2.1.2 and
# triton>=2.3.1, and is the one the baseline's H200 figures were measured with.) flash-attn has no
# wheel here: attention is sdpa (train.attention: auto) unless flash_attn imports there.
#
# Then, with the `run` tool of the device (one call, ~10 of the 15 device minutes with start-up):
#   run(command="bash bench/device_train_bench.sh", carry=[".whl"], timeout_s=560)
set -u
t0=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tmp=$(mktemp -d)
WHEELS=${WHEELS:-$repo/.whl}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$tmp/site" "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="$tmp/site:$repo"
else
  echo "no .whl/*.whl: trl, datasets and liger-kernel must already be installed"
  export PYTHONPATH="$repo"
fi
export PYTHONUNBUFFERED=1 HF_HOME="$tmp/hf" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TUNELINE_PROGRESS=0
OUT=${OUT:-$tmp/out}; mkdir -p "$OUT"
BASELINE=${BASELINE:-$repo/.whl/trl_baseline.py}
[ -f "$BASELINE" ] || BASELINE="$repo/../shared/bench/trl_baseline.py"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,driver_version --format=csv,noheader
python3 - <<'PY'
import importlib
for m in ["torch", "triton", "transformers", "peft", "accelerate", "trl", "datasets", "liger_kernel", "pydantic", "tokenizers", "flash_attn"]:
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__, str(e)[:120])
PY
log="$OUT/train_bench.log"
filter() { grep -vE 'Warning|warn\(|^\s*$' ; }
# Main variants: 1B tutorial / best TRL / tuneline, 8B best TRL / tuneline, DPO TRL / tuneline.
python3 "$repo/bench/train_bench.py" --baseline "$BASELINE" --time-budget "${MAIN_BUDGET:-300}" \
  ${ONLY:+--only "$ONLY"} --out "$OUT" 2>&1 | tee "$log" | filter
# Extra: flex_attention (block-sparse per-document masks) in what is left; recompiles per shape.
left=$(( ${TOTAL_S:-480} - ($(date +%s) - t0) ))
if [ "$left" -gt 60 ]; then
  echo "# extras with ${left}s left"
  mkdir -p "$OUT/extra"
  timeout "$left" python3 "$repo/bench/train_bench.py" --baseline "$BASELINE" --only "${EXTRAS:-1b/tuneline_flex}" \
    --out "$OUT/extra" 2>&1 | tee "$OUT/train_bench_extra.log" | filter
else
  echo "# no time left for extras (${left}s)"
fi
echo "# device script wall $(( $(date +%s) - t0 ))s"
