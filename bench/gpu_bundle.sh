#!/usr/bin/env bash
# Builds bench/gpu_bundle/ (ignored by git): what the GPU machine lacks to run liandan, as
# cp312 wheels, sent along with the working tree (carry: ["bench/gpu_bundle"]).
#
#   bash bench/gpu_bundle.sh            # build (downloads from PyPI, cached), print the size
#   bash bench/gpu_bundle.sh --check    # verify an existing bundle: contents, versions, size
#   bash bench/gpu_bundle.sh --check PY312   # and, in that Python 3.12 (one with only the GPU
#       machine's packages), unpack it as gpu_check.sh does and import Ray Tune, Optuna and
#       liandan's `run` path from it
#
# The GPU machine (see /work/shared/GPU.md) has Python 3.12 with torch 2.11, numpy, scipy,
# pandas, pyarrow, aiohttp (+ attrs), grpcio, msgpack, protobuf, requests, click, filelock,
# pyyaml, rich, typer, psutil, matplotlib, ... and no registry. It lacks Ray, Optuna and
# what they and liandan's `run` path import: those are below, pinned to what the project's
# .venv holds (pyproject pins optuna 5.0.0 and ray 2.60.0). Ray whole is 79 MB; slimmed
# (no Java jars, RLlib, Ray LLM, Ray Serve, dashboard source maps) and re-zipped, 43 MB.
# Not brought: fastapi, uvicorn, pydantic-settings, optuna-dashboard (not on `liandan run
# --no-report`'s path), cmaes (only for `sampler: cmaes`), greenlet (SQLAlchemy 2.1's sync
# engine does without it), attrs (aiohttp's dependency, so there).
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=bench/gpu_bundle
LIMIT_MIB=${GPU_BUNDLE_LIMIT_MIB:-56}   # leaves 8 MiB of the 64 MiB sent for the working tree
CACHE=${GPU_BUNDLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liandan-gpu-bundle}
PY=${PYTHON:-python3}

RAY=ray==2.60.0
# name==version, one per wheel (--no-deps: the machine has the rest).
WHEELS=(
  optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0 tqdm==4.70.1
  jsonschema==4.26.0 referencing==0.37.0 rpds-py==2026.9.1 jsonschema-specifications==2025.9.1
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 tensorboardX==2.6.5
)
# Inside the Ray wheel: what liandan never loads (Ray Tune needs ray/data, ray/train, ray/air).
RAY_DROP=(ray/jars ray/rllib ray/llm ray/serve)

size_mib() { du -sb "$1" | awk '{printf "%.1f", $1 / 1048576}'; }

check() {
  local ok=1 n
  [ -d "$BUNDLE" ] || { echo "no $BUNDLE: run bash bench/gpu_bundle.sh" >&2; return 1; }
  [ -f "$BUNDLE/ray-2.60.0-slim.zip" ] || { echo "missing ray-2.60.0-slim.zip" >&2; ok=0; }
  for spec in "${WHEELS[@]}"; do
    n=$(ls "$BUNDLE"/wheels/ 2>/dev/null | "$PY" -c '
import re, sys
name, version = sys.argv[1].split("==")
norm = re.sub(r"[-_.]+", "_", name).lower()
print(sum(1 for f in sys.stdin
          if re.sub(r"[-_.]+", "_", f.split("-")[0]).lower() == norm
          and f.split("-")[1] == version and f.strip().endswith(".whl")))' "$spec")
    [ "$n" = 1 ] || { echo "missing wheel $spec" >&2; ok=0; }
  done
  # Nothing else in it.
  extra=$(ls "$BUNDLE"/wheels/ | wc -l)
  [ "$extra" = "${#WHEELS[@]}" ] || { echo "wheels/ holds $extra files, expected ${#WHEELS[@]}" >&2; ok=0; }
  # Every wheel is for CPython 3.12 (or pure Python) on x86-64 Linux.
  for f in "$BUNDLE"/wheels/*.whl; do
    case "$(basename "$f")" in
      *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp312-cp312-*manylinux*x86_64*.whl) ;;
      *) echo "not a cp312 x86-64 wheel: $(basename "$f")" >&2; ok=0 ;;
    esac
  done
  if [ -f "$BUNDLE/ray-2.60.0-slim.zip" ]; then
    "$PY" - "$BUNDLE/ray-2.60.0-slim.zip" "${RAY_DROP[@]}" <<'EOF' || ok=0
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bad = [d for d in sys.argv[2:] if any(n.startswith(d + "/") for n in names)]
maps = [n for n in names if n.startswith("ray/dashboard/") and n.endswith(".js.map")]
need = ["ray/__init__.py", "ray/tune/__init__.py", "ray/data/__init__.py",
        "ray/train/__init__.py", "ray/air/__init__.py", "ray/_raylet.so",
        "ray/core/src/ray/raylet/raylet", "ray/core/src/ray/gcs/gcs_server"]
missing = [n for n in need if n not in names]
cp312 = any(n.startswith("ray-2.60.0.dist-info/WHEEL") for n in names) and \
    "cp312" in zipfile.ZipFile(sys.argv[1]).read("ray-2.60.0.dist-info/WHEEL").decode()
for what, items in (("dropped folders still in the zip", bad), ("source maps", maps[:3]),
                    ("missing", missing)):
    if items:
        print(f"ray zip: {what}: {items}", file=sys.stderr)
if not cp312:
    print("ray zip: not the cp312 wheel", file=sys.stderr)
sys.exit(1 if bad or maps or missing or not cp312 else 0)
EOF
  fi
  # Pins against the project's .venv, where there is one (a warning: the bundle's pins rule).
  if [ -x .venv/bin/python ]; then
    .venv/bin/python - "$RAY" "${WHEELS[@]}" <<'EOF'
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != version:
        print(f"note: bundle has {name} {version}, .venv has {have}")
EOF
  fi
  local mib
  mib=$(size_mib "$BUNDLE")
  echo "bundle $BUNDLE: ${mib} MiB (limit ${LIMIT_MIB} MiB)"
  if ! awk -v s="$mib" -v l="$LIMIT_MIB" 'BEGIN { exit !(s <= l) }'; then
    echo "bundle is over the limit: ${mib} MiB > ${LIMIT_MIB} MiB" >&2; ok=0
  fi
  # What goes with it: the working tree's tracked and untracked, not ignored, files.
  if git rev-parse --git-dir > /dev/null 2>&1; then
    local tree
    tree=$(git ls-files -z -c -o --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
      | awk '{ s += $1 } END { printf "%.1f", s / 1048576 }')
    echo "working tree sent with it: ${tree} MiB; together" \
      "$(awk -v a="$mib" -v b="$tree" 'BEGIN { printf "%.1f", a + b }') MiB of the 64 MiB"
  fi
  [ "$ok" = 1 ] && echo "bundle check: ok" || { echo "bundle check: FAILED" >&2; return 1; }
}

imports() {  # imports PY312: the bundle as the GPU machine sees it, in a cp312 Python
  local py=$1 tmp rc
  tmp=$(mktemp -d)
  "$py" bench/gpu_check.py unpack --out "$tmp/out" --site "$tmp/site" --bundle "$BUNDLE" \
    > /dev/null || { rm -rf "$tmp"; return 1; }
  PYTHONPATH="$tmp/site:$(pwd)" "$py" - "$tmp/site" <<'EOF'
import importlib, sys, time
assert sys.version_info[:2] == (3, 12), f"not Python 3.12: {sys.version}"
site = sys.argv[1]
t0 = time.perf_counter()
for name in ("ray", "ray.tune", "ray.tune.search.optuna", "optuna", "sqlalchemy", "alembic",
             "pydantic", "jsonschema", "tensorboardX", "service.cli", "service.spec"):
    importlib.import_module(name)
# liandan's runner, where the refactor puts it or where it was (Ray, Tune, Optuna, torch).
try:
    runner = importlib.import_module("service.run.runner")
except ModuleNotFoundError as exc:
    if exc.name not in ("service.run", "service.run.runner"):
        raise
    runner = importlib.import_module("service.runner")
import ray, optuna
for mod in (ray, optuna):
    assert mod.__file__.startswith(site), f"{mod.__name__} not from the bundle: {mod.__file__}"
print(f"imports ok in Python {sys.version.split()[0]}: ray {ray.__version__}, optuna "
      f"{optuna.__version__}, {runner.__name__}.run_study ({time.perf_counter() - t0:.1f} s)")
EOF
  rc=$?
  rm -rf "$tmp"
  return $rc
}

if [ "${1:-}" = "--check" ]; then
  check || exit 1
  if [ -n "${2:-}" ]; then imports "$2" || { echo "bundle imports: FAILED" >&2; exit 1; }; fi
  exit 0
fi

download() {  # cp312 manylinux x86-64 wheels, without dependencies, into $CACHE
  # PIP_CONFIG_FILE / PIP_FIND_LINKS cleared: the local mirrors hold cp311 wheels only.
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$PY" -m pip download --quiet --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d "$CACHE" "$@"
}

mkdir -p "$CACHE"
echo "downloading cp312 wheels into $CACHE (cached) ..."
download "$RAY" "${WHEELS[@]}"

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels"
for spec in "${WHEELS[@]}"; do
  f=$("$PY" - "$CACHE" "$spec" <<'EOF'
import pathlib, re, sys
name, version = sys.argv[2].split("==")
norm = re.sub(r"[-_.]+", "_", name).lower()
hits = [p for p in pathlib.Path(sys.argv[1]).glob("*.whl")
        if re.sub(r"[-_.]+", "_", p.name.split("-")[0]).lower() == norm
        and p.name.split("-")[1] == version
        and ("-cp312-" in p.name or "-none-any" in p.name)]
if len(hits) != 1:
    sys.exit(f"expected one wheel for {sys.argv[2]}, found {[h.name for h in hits]}")
print(hits[0])
EOF
)
  cp "$f" "$BUNDLE/wheels/"
done

# Ray: unpack, drop what liandan never loads, re-zip at -9 (keeping the binaries' modes).
ray_whl=$(ls "$CACHE"/ray-2.60.0-cp312-cp312-manylinux*x86_64.whl | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "slimming $(basename "$ray_whl") ($(size_mib "$ray_whl") MiB) ..."
(cd "$work" && unzip -q "$ray_whl")
for d in "${RAY_DROP[@]}"; do rm -rf "${work:?}/$d"; done
find "$work/ray/dashboard" -name '*.js.map' -delete
(cd "$work" && zip -q -r -9 -X ray.zip ray ray-2.60.0.dist-info)
mv "$work/ray.zip" "$BUNDLE/ray-2.60.0-slim.zip"

cat > "$BUNDLE/README" <<EOF
Built by bench/gpu_bundle.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) ($(hostname)); ignored by git.
ray-2.60.0-slim.zip: Ray 2.60.0 cp312 without ${RAY_DROP[*]} and dashboard *.js.map.
wheels/: cp312 / pure-Python wheels, --no-deps. bench/gpu_check.sh unpacks both into a
temporary folder named in PYTHONPATH.
EOF
ls -la "$BUNDLE" "$BUNDLE/wheels" | sed 's/^/  /'
check
