#!/usr/bin/env bash
# The one prepared GPU check (issue 14), under 8 minutes, for the GPU machine as it is: its
# system python3 (3.12, torch 2.11) and no registry. Ray, Optuna and what else liandan
# needs come in bench/gpu_bundle/ (build it here first: bash bench/gpu_bundle.sh), sent
# along with the working tree. Each stage has its own timeout and may fail alone.
#
#   bash bench/gpu_check.sh [--out DIR] [--cpu]
#
#   --out DIR   where the results go (default: $OUT if set, else bench/results/gpu)
#   --cpu       run stages 1 and 2 on the CPU with tiny sizes (a test of the script);
#               without it and without CUDA they are recorded as skipped ("no CUDA")
#   PYTHON=...  the interpreter (default python3)
#   GPU_CHECK_NOTE=...  a line kept in the summary (what ran where)
#
# Stages (bench/gpu_check.py says what each measures):
#   0 unpack   the bundle into a temporary folder named in PYTHONPATH       (30 s)
#   1 torch    cifar10_resnet on CUDA: s/epoch, samples/s; R1 per batch size (100 s)
#   2 packing  1, 2, 4, 8 trial processes on the GPU: trials/h, utilisation  (170 s)
#   3 liandan  `python -m service.cli run bench/gpu_spec.yaml` on local Ray,
#              SQLite, gpu: 0.25; each trial's device attribute             (140 s)
# At most 440 s in all, plus a few seconds for the machine's facts and the summary.
# then gpu_check.json in the output folder: machine, date, each stage's status and numbers.
set -uo pipefail  # no -e: a failed stage must not stop the next
cd "$(dirname "$0")/.."
ROOT=$(pwd)

OUT_DIR=${OUT:-bench/results/gpu}
CPU=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR=$2; shift 2 ;;
    --cpu) CPU=(--cpu); shift ;;
    *) echo "usage: bash bench/gpu_check.sh [--out DIR] [--cpu]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python3}
BUNDLE=${GPU_BUNDLE:-$ROOT/bench/gpu_bundle}  # GPU_BUNDLE=DIR: another bundle (or none, to test)
SITE=$(mktemp -d "${TMPDIR:-/tmp}/liandan-gpu-site.XXXXXX")
trap 'rm -rf "$SITE"' EXIT
RCS=()

stage() {  # stage NAME SECONDS COMMAND...: timed, logged, its exit code kept for the summary
  local name=$1 limit=$2 t0 rc
  shift 2
  echo "=== stage $name (at most ${limit} s) ==="
  t0=$(date +%s.%N)
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT_DIR/stage_$name.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 137 ] && rc=124  # killed after the grace period: still a timeout
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "=== stage $name: exit $rc after ${secs} s ==="
  RCS+=("$name=$rc:$secs")
}


echo "liandan GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ), output $OUT_DIR"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  || echo "no nvidia-smi"
stage unpack 30 "$PY" bench/gpu_check.py unpack --out "$OUT_DIR" --site "$SITE" --bundle "$BUNDLE"
# The environment variable, not sys.path: Ray's raylet and workers are subprocesses.
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" bench/gpu_check.py machine --out "$OUT_DIR" || true
stage torch 100 "$PY" bench/gpu_check.py torch --out "$OUT_DIR" "${CPU[@]}"
stage packing 170 "$PY" bench/gpu_check.py packing --out "$OUT_DIR" --budget 160 "${CPU[@]}"
stage liandan 140 "$PY" bench/gpu_check.py liandan --out "$OUT_DIR" --timeout 125 "${CPU[@]}"
"$PY" bench/gpu_check.py summary --out "$OUT_DIR" --rc "${RCS[@]}" "${CPU[@]}"
