#!/usr/bin/env bash
# The GPU checks of issue #16, in one run for a GPU session (an H200: under 10 minutes, typically ~5).
#   bash bench/gpu_checks.sh            # writes to $OUT (else ./gpu-checks)
# 1. the gpu-marked tests (search and train on CUDA in bf16, resume, batched augmentation);
# 2. the two-rank search under torchrun with nccl, when the machine has two GPUs;
# 3. bench/gpu_search_step.py: the supernet step, fp32/bf16 x NHWC/NCHW, and DARTS's.
# Each part's output lands in $OUT; a failing part does not stop the others.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-checks}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count())" \
  | tee "$OUT/torch.txt"

timeout 180 "$PY" -m pytest -m gpu -q -rs tests/ --junitxml="$OUT/pytest-gpu.xml" 2>&1 | tee "$OUT/pytest-gpu.txt" || status=1

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  HWNAS_DDP_DEVICE=cuda timeout 120 "$PY" -m pytest -q tests/test_search_ddp.py 2>&1 | tee "$OUT/ddp-nccl.txt" || status=1
else
  echo "one GPU: the nccl two-rank search is not run" | tee "$OUT/ddp-nccl.txt"
fi

timeout 300 "$PY" bench/gpu_search_step.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/gpu_search_step.txt" || status=1
exit $status
