#!/usr/bin/env bash
# One table of what a CUDA machine does with pokevq, in at most 8 minutes: bf16 vs fp32 (eager and
# torch.compile), the streaming loader's data stall on a packed local bucket, DDP scaling over every
# visible GPU, peak memory. Run from the repository root on the GPU machine:
#   bash scripts/gpu_check.sh            (uses .venv when present, else python3 with torch installed)
#   bash scripts/gpu_check.sh --cpu-dry-run   (every part on the CPU, tiny model: checks the script)
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
if ! "$python" -c "import pokevq" 2>/dev/null; then
  "$python" -m pip install --quiet -e . >&2  # the machine's own torch (CUDA build) is kept: torch is a range
fi
exec timeout 480 "$python" -m benchmarks.gpu_check "$@"
