#!/usr/bin/env bash
# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
# Every GPU figure of docs/performance.md in one run of at most 10 minutes, most important first; each JSON lands in
# $OUT as soon as it is measured, and everything printed also goes to $OUT/log.txt. benchmarks/README.md says what the
# machine needs (wheels in .whl/ are installed first, for a machine without diffusers).
#
#   bash benchmarks/run_gpu_benchmarks.sh        # in the repository root; BUDGET_S (default 570) caps the whole run
#   ONLY='environment|transformer' bash benchmarks/run_gpu_benchmarks.sh    # a regex of step names: split the work
#   ONLY='environment|pipeline' bash benchmarks/run_gpu_benchmarks.sh       # over two calls when time allows
#
# PYTHON (default python3) runs everything. PRESET, RESOLUTION, LR_SIZE and STEPS (defaults: the targets' job,
# sd35-medium, 1024, 512, 40) shrink the job; the test suite runs the whole script that way on the CPU, so the GPU
# call does not find its bugs.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results/gpu}
BUDGET_S=${BUDGET_S:-570}
ONLY=${ONLY:-.*}
LOG="$OUT/log.txt"
mkdir -p "$OUT"

export PYTHON=${PYTHON:-python3}
PRESET=${PRESET:-sd35-medium}
RESOLUTION=${RESOLUTION:-1024}
LR_SIZE=${LR_SIZE:-512}
STEPS=${STEPS:-40}

# For a machine without diffusers (and without internet): the wheels put in .whl/ are installed into /tmp/site.
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1

# step NAME MAX_SECONDS COMMAND...: runs COMMAND for at most MAX_SECONDS and never past the budget, logging its output.
step() {
  local name=$1 limit=$2 left
  shift 2
  [[ $name =~ ^($ONLY)$ ]] || return
  left=$((BUDGET_S - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 30)); then
    echo "== $name: skipped, ${left}s of the budget left" | tee -a "$LOG"
    return
  fi
  echo "== $name (at most ${limit}s): $*" | tee -a "$LOG"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "== $name: exit ${PIPESTATUS[0]}, ${SECONDS}s into the run" | tee -a "$LOG"
}

TRANSFORMER=("$PYTHON" benchmarks/bench_transformer.py --preset "$PRESET" --resolution "$RESOLUTION" --batch 2 --dtype bf16 --text-tokens 154)
step environment 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv;
  "$PYTHON" -c "import torch, diffusers, transformers, accelerate; print(torch.__version__, torch.version.cuda, diffusers.__version__, transformers.__version__, accelerate.__version__)"'
# Target 1: eager forward beside plain SD3.5-medium, with folded LR projections, then regional compilation.
step transformer-eager 120 "${TRANSFORMER[@]}" --baseline-sd3 --output "$OUT/transformer_eager.json"
step transformer-fused 90 "${TRANSFORMER[@]}" --fuse-lr-projections --output "$OUT/transformer_fused.json"
step transformer-compiled 200 "${TRANSFORMER[@]}" --fuse-lr-projections --compile --output "$OUT/transformer_compiled.json"
# Target 2: fp32 folded vs plain, bf16 vs fp32 beside plain SD3's bf16 error; then cuDNN and flash attention kernels.
NUMERICS=("${TRANSFORMER[@]}" --baseline-sd3 --fuse-lr-projections --numerics)
step transformer-numerics 90 "${NUMERICS[@]}" --output "$OUT/transformer_numerics.json"
step transformer-numerics-cudnn 60 "${NUMERICS[@]}" --attention-backend _native_cudnn --output "$OUT/transformer_numerics_cudnn.json"
step transformer-numerics-flash 60 "${NUMERICS[@]}" --attention-backend _native_flash --output "$OUT/transformer_numerics_flash.json"
# Targets 3-5: 512 -> 2048 px, 40 steps; all tiles vs one at a time, offload on a simulated 12 GiB card, caching hooks.
step pipeline 600 "$PYTHON" benchmarks/bench_pipeline.py --preset "$PRESET" --lr-size "$LR_SIZE" --upscale 4 --steps "$STEPS" \
  --guidance 8 --dtype bf16 --tile-batch-sizes auto 1 --cpu-offload --offload-memory-limit-gib 12 \
  --cache none first_block taylorseer --output "$OUT/pipeline.json"

"$PYTHON" - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print("targets: eager <= 0.16 s, compiled <= 0.115 s, compile < 60 s; fp32 folded < 1e-5, bf16 ~ SD3's bf16 error;")
print("         pipeline <= 40 s and >= 4x over tile_batch=1; offload peak <= 12 GiB")
for name in ("transformer_eager", "transformer_fused", "transformer_compiled"):
    path = out / f"{name}.json"
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    for model, result in results.items():
        if isinstance(result, dict):
            compile_s = f", compile {result['compile_s']:.0f} s" if "compile_s" in result else ""
            peak = result.get("peak_memory_gib", float("nan"))
            print(f"{name:<22}{model:>7}: {result['median_s']:.4f} s/forward, peak {peak:.1f} GiB{compile_s}")
for name in ("transformer_numerics", "transformer_numerics_cudnn", "transformer_numerics_flash"):
    path = out / f"{name}.json"
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    for model, errors in results.items():
        if isinstance(errors, dict):
            print(f"{name:<28}{model:>7}: rel. error vs fp32 " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
path = out / "pipeline.json"
payload = json.loads(path.read_text()) if path.exists() else {"configurations": [], "ratios": {}}
speedups = payload["ratios"].get("speedup_over_tile_batch_1", {})
for result in payload["configurations"]:
    if "error" in result:
        print(f"{result['name']:<34} failed: {result['error'][:120]}")
        continue
    print(
        f"{result['name']:<34} {result['wall_s']:7.2f} s, transformer {result['phases']['transformer']['seconds']:6.2f} s "
        f"({result['phases']['transformer']['calls']} calls), peak {result.get('peak_memory_gib', float('nan')):5.1f} GiB, "
        f"max|diff| {result['max_abs_diff_vs_first']:.1e}, x{speedups.get(result['name'], 1.0):.2f} over tile_batch=1"
    )
EOF
