#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (under 8 minutes): builds the venv if
# needed, then R1 throughput per batch size and trials/hour at 1, 2, 4, 8 trials per GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make venv
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 470 .venv/bin/python bench/gpu_check.py "$@"
