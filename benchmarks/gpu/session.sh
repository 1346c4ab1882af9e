#!/usr/bin/env bash
# One command on a GPU machine gives every GPU result of skystack, in at most ~8 minutes of wall
# time, as at most 8 files under $OUT:
#   session.log  pytest-gpu.txt  gpu-<device>-<date>.{json,md}  bench-quick-<device>-<date>.{json,md}
#
#   OUT=DIR bash benchmarks/gpu/session.sh             # on the GPU machine
#   OUT=DIR bash benchmarks/gpu/session.sh --dry-run   # here, without a GPU: the same flow on
#                                                      # the CPU, GPU steps reported as skipped
#
# Packages: where benchmarks/gpu/wheels/ holds wheels (benchmarks/gpu/fetch_wheels.sh; the lent
# machine has no network), they are installed with --no-index into a private target first;
# elsewhere (a user's own GPU box) the installed packages are used, with this checkout's src/
# when skystack itself is not installed. PYTHON picks the interpreter (default python3).
#
# Steps (each with its own time cap, inside one session budget; a failing step costs its row,
# not the run): env, the GPU tests (pytest -m gpu), benchmarks/bench_gpu.py --session, the night
# on the GPU vs the CPU (benchmarks/gpu/night_gpu.py), skystack bench --quick, collect.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: OUT=DIR bash benchmarks/gpu/session.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-benchmarks/results/gpu-session}
PY=${PYTHON:-python3}
BUDGET=${SESSION_BUDGET_S:-470}   # 10-minute command: ~8 min of steps, the rest for start-up
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/skystack-gpu-session.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
LOG=$OUT/session.log
STEPS=$WORK/steps.tsv
: > "$LOG"
: > "$STEPS"

log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }

# step NAME CAP_SECONDS COMMAND...: run under a cap (cut to what is left of the budget), record
# its status and duration, keep its output in $WORK/NAME.out and its tail in the log.
step() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  (( cap > left )) && cap=$left
  if (( cap < 5 )); then
    log "$name: skipped, session budget spent"
    printf '%s\tskipped: session budget spent\t0\n' "$name" >> "$STEPS"
    return 0
  fi
  log "$name: start (cap ${cap} s): $*"
  local t0=$SECONDS rc status
  timeout -k 10 "$cap" "$@" > "$WORK/$name.out" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after ${cap} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  tail -n 30 "$WORK/$name.out" >> "$LOG"
  log "$name: $status in $((SECONDS - t0)) s"
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$STEPS"
}

# Packages for the lent machine (no network there): the wheels carried with the tree.
if (( DRY )); then
  printf 'wheels\tskipped: dry run (fetch_wheels.sh proves the install)\t0\n' >> "$STEPS"
elif compgen -G "benchmarks/gpu/wheels/*.whl" > /dev/null; then
  SITE=${TMPDIR:-/tmp}/skystack-site
  step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
    benchmarks/gpu/wheels/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
elif ! "$PY" -c "import skystack" 2> /dev/null; then
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
  printf 'wheels\tnone: installed packages and src/ used\t0\n' >> "$STEPS"
fi

step env 30 bash -c "nvidia-smi -L 2>&1 || echo 'nvidia-smi: not found'; \
  \"$PY\" benchmarks/gpu/env_probe.py"

# The GPU tests (every test marked gpu; without a GPU they all skip, which proves collection).
step pytest-gpu 120 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests
cp "$WORK/pytest-gpu.out" "$OUT/pytest-gpu.txt" 2> /dev/null

if (( DRY )); then
  step bench-gpu 120 "$PY" benchmarks/bench_gpu.py --dry-run --out "$WORK" --stem bench-gpu \
    --workdir "$WORK"
  step night-gpu 90 "$PY" benchmarks/gpu/night_gpu.py --dry-run --out "$WORK/night.json" \
    --workdir "$WORK"
  step bench-quick 90 "$PY" -m skystack bench --quick --backend cpu --peers numpy \
    --frames 5 --size 64x64 --output "$WORK/bench-quick" --overwrite -q
else
  step bench-gpu 210 "$PY" benchmarks/bench_gpu.py --session --out "$WORK" --stem bench-gpu \
    --workdir "$WORK"
  step night-gpu 100 "$PY" benchmarks/gpu/night_gpu.py --out "$WORK/night.json" \
    --workdir "$WORK"
  step bench-quick 60 "$PY" -m skystack bench --quick --backend cpu,gpu \
    --output "$WORK/bench-quick" --overwrite -q
fi

BUDGET=$((BUDGET + 30))  # collecting must happen even when the steps used the whole budget
step collect 30 "$PY" benchmarks/gpu/collect.py --work "$WORK" --out "$OUT" \
  $( (( DRY )) && echo --dry-run )
log "done: $(ls "$OUT" | tr '\n' ' ')"
# Exit status: 0 when every step ran (the results say what each measured), 1 otherwise.
! grep -qv $'\tok\t\|\tskipped: dry run\|\tnone: ' "$STEPS"
