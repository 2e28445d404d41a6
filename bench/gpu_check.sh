#!/usr/bin/env bash
# The GPU path without Ray (bench/gpu_check.py): bf16 model stage vs fp32 CPU, throughput at batch
# 1-1024, one bf16 training epoch. For the device tool: `bash bench/gpu_check.sh` (writes $OUT/gpu_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec python -m bench.gpu_check "$@"
