#!/usr/bin/env bash
# Download the wheels the lent GPU machine needs (it has no network) into a git-ignored folder,
# build skystack's own wheel beside them, check the total fits what travels with the tree, and
# prove here that they install with --no-index into a clean Python 3.12 and that the GPU tests
# collect with them.
#
#   bash benchmarks/gpu/fetch_wheels.sh [--no-verify]      # -> benchmarks/gpu/wheels/
#
# Then, with the device tool: run `bash benchmarks/gpu/session.sh` with carry
# ["benchmarks/gpu/wheels"]. The list is benchmarks/gpu/wheels.txt (one version each).
# PY312 names the Python 3.12 interpreter (default: python3.12 on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=benchmarks/gpu/wheels
LIMIT_MIB=60
VERIFY=1
[ "${1:-}" = "--no-verify" ] && VERIFY=0
find_py312() {
  local c
  for c in "$(command -v python3.12 || true)" "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
      2>/dev/null && { echo "$c"; return; }
  done
}
PY312=${PY312:-$(find_py312)}
if [ -z "$PY312" ] || ! "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null
then
  echo "fetch_wheels.sh: no Python 3.12 found (set PY312, or install one: pyenv install 3.12," \
       "apt-get install python3.12)" >&2
  exit 2
fi

rm -rf "$DEST"
mkdir -p "$DEST"
mapfile -t WANT < <(grep -v '^\s*#' benchmarks/gpu/wheels.txt | grep -v '^\s*$')
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${WANT[@]}"
# skystack itself, from this checkout (pure Python + the CUDA sources in kernels/).
python3 -m pip wheel -q --no-deps -w "$DEST" .

count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne $(( ${#WANT[@]} + 1 )) ]; then
  echo "fetch_wheels.sh: expected $(( ${#WANT[@]} + 1 )) wheels, got $count" >&2
  exit 1
fi
total=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f1)
echo "$count wheels, $((total / 1024 / 1024)) MiB in $DEST"
if (( total > LIMIT_MIB * 1024 * 1024 )); then
  echo "fetch_wheels.sh: $((total / 1024 / 1024)) MiB exceeds the ${LIMIT_MIB} MiB limit" >&2
  exit 1
fi
(( VERIFY )) || exit 0

# A clean 3.12 with what the lent machine has (torch and CuPy left out: too big to fetch here;
# dfreproject's import is checked only where torch is present), then the carried wheels exactly
# as session.sh installs them there.
CHECK=$(mktemp -d)
trap 'rm -rf "$CHECK"' EXIT
"$PY312" -m venv "$CHECK/venv"
"$CHECK/venv/bin/pip" install -q numpy scipy numba matplotlib pytest tqdm tifffile
"$CHECK/venv/bin/python" -m pip install -q --no-index --no-deps --no-compile \
  --target "$CHECK/site" "$DEST"/*.whl
PYTHONPATH=$CHECK/site "$CHECK/venv/bin/python" - <<'PY'
import importlib
import skystack
from skystack.backends.gpu.kernels import kernels_dir
for name in ("astropy", "reproject", "reproject.mosaicking", "sep", "ccdproc", "bottleneck",
             "hypothesis", "dask.array", "distributed", "xisf", "astroscrappy", "drizzle",
             "colour_demosaicing"):
    importlib.import_module(name)
assert (kernels_dir() / "combine.cu").is_file(), "kernels missing from the skystack wheel"
try:
    import torch  # noqa: F401
except ImportError:
    print("torch absent here: dfreproject's import not checked")
else:
    import dfreproject  # noqa: F401
print("imports ok: skystack", skystack.__version__, "from", skystack.__file__)
PY
PYTHONPATH=$CHECK/site "$CHECK/venv/bin/python" -m pytest --collect-only -q -m gpu \
  -p no:cacheprovider tests | tail -n 1
PYTHONPATH=$CHECK/site "$CHECK/venv/bin/python" -m skystack --version
echo "verified: the wheels install with --no-index into a clean Python 3.12 and the GPU tests collect"
