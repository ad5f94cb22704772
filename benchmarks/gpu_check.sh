#!/usr/bin/env bash
# The NVIDIA device check, one command: benchmarks/gpu_check.sh OUTDIR [--cpu | --here]
#
# GPU host (one H100/H200, 16 cores; ~8 minutes): a fresh venv in OUTDIR/venv with '.[gpu]' (and a
# TensorRT 10 wheel when one resolves), random-weight DLA models via `batchcls export`, generated
# images; prints the table and writes OUTDIR/gpu_check.json (see benchmarks/gpu_check.py).
# --cpu: the same script as a smoke test on the CPU provider with tiny sizes and the current
# interpreter (no venv, no installs): what CI runs, in under a minute.
# --here: the GPU check with the current interpreter as it is (a host where onnxruntime-gpu and
# batchcls are already installed, or that reaches no package registry).
set -euo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR [--cpu | --here]}
MODE=gpu
[[ "${2:-}" == "--cpu" ]] && MODE=cpu
[[ "${2:-}" == "--here" ]] && MODE=here
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RAY_ADDRESS=local  # a cluster of its own, never one left by `ray start`
if [[ $MODE == gpu ]]; then
    PY=${PYTHON:-python3}
    t0=$(date +%s)
    "$PY" -m venv "$OUT/venv"
    . "$OUT/venv/bin/activate"
    python -m pip install --quiet --upgrade pip
    # The GPU runtime alone: '.[gpu]' must not bring the CPU onnxruntime (doctor checks it).
    python -m pip install --quiet -e "$REPO[gpu]" 2>&1 | tail -5
    # TensorRT for onnxruntime's TensorRT provider: the wheels link libnvinfer.so.10 (TensorRT 10).
    if python -m pip install --quiet 'tensorrt-cu13>=10.9,<11' >/dev/null 2>&1 \
        || python -m pip install --quiet 'tensorrt-cu12>=10.9,<11' >/dev/null 2>&1; then
        TRT_LIBS=$(python -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)
        [[ -n "$TRT_LIBS" ]] && export LD_LIBRARY_PATH="$TRT_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    echo "install: $(( $(date +%s) - t0 )) s" | tee "$OUT/install.txt"
    pip list 2>/dev/null | grep -iE '^(onnxruntime|nvidia-|tensorrt)' > "$OUT/packages.txt" || true
    cd "$OUT"  # run from the install, not from the source tree's own imports
    python -m batchcls doctor | tee "$OUT/doctor.txt"
    exec python "$REPO/benchmarks/gpu_check.py" "$OUT" --mode gpu
elif [[ $MODE == here ]]; then
    PY=${PYTHON:-python3}
    "$PY" -m batchcls doctor | tee "$OUT/doctor.txt"
    exec "$PY" "$REPO/benchmarks/gpu_check.py" "$OUT" --mode gpu
else
    PY=${PYTHON:-python}
    exec "$PY" "$REPO/benchmarks/gpu_check.py" "$OUT" --mode cpu
fi
