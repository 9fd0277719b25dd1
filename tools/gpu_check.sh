#!/usr/bin/env bash
# The GPU check (common/gpu_check.py: every train script, then speed beside stock MMSegmentation).
#
#   bash tools/gpu_check.sh --prepare          # here: ../shared/gpu-wheels/*.whl and the stock baseline
#                                              #   into .gpu-wheels/ (git-ignored; carried to the GPU machine)
#   bash tools/gpu_check.sh --out "$OUT"       # there: install .gpu-wheels/*.whl beside the machine's own
#                                              #   torch, then python -m common.gpu_check --out "$OUT"
#
# Other arguments go to `python -m common.gpu_check` (--dry-run, --deadline-min 7.5, --only smoke, ...).
# The deadline counts from this script's start, so the wheels' install is inside it. The python is
# $PYTHON, else .venv/bin/python (then nothing is installed), else python3. A check killed by a signal
# (a crash in a CUDA library, say) is resumed with --resume: what it had finished is kept.
set -euo pipefail
started=$(date +%s)
cd "$(dirname "$0")/.."
wheels=.gpu-wheels

if [ "${1:-}" = --prepare ]; then
    shared=${SHARED:-../shared}
    mkdir -p "$wheels"
    cp "$shared"/gpu-wheels/*.whl "$wheels"/
    cp "$shared"/bench/stock_mmseg_train.py "$wheels"/
    git rev-parse --short HEAD > "$wheels"/COMMIT 2>/dev/null || true
    echo "prepared $wheels/: $(ls "$wheels"/*.whl | wc -l) wheels, stock_mmseg_train.py ($(du -sh "$wheels" | cut -f1))"
    exit 0
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
install_s=
if [ "$python" != .venv/bin/python ] && compgen -G "$wheels/*.whl" > /dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    install_s=$(( $(date +%s) - started ))
    echo "[gpu_check.sh] installed $(ls "$wheels"/*.whl | wc -l) wheels into $site in ${install_s} s"
fi
export PYTHONUNBUFFERED=1 GPU_CHECK_INSTALL_S="$install_s" GPU_CHECK_COMMAND="bash tools/gpu_check.sh $*"

resume=()
for attempt in 1 2 3; do
    code=0
    "$python" -m common.gpu_check --started-at "$started" "$@" "${resume[@]}" || code=$?
    if [ "$code" -lt 128 ]; then exit "$code"; fi
    echo "[gpu_check.sh] the check died (exit $code); resuming" >&2
    resume=(--resume)
done
exit "$code"
