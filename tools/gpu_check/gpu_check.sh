#!/usr/bin/env bash
# The GPU check (tools/gpu_check/check.py): every train script on the GPU, then the core six beside stock
# MMSegmentation (tools/bench/stock_mmseg_train.py, in a process of its own).
#
#   bash tools/gpu_check/gpu_check.sh --out DIR            # a GPU machine with this repository's .venv
#                                                          #   (bash setup.sh): runs with .venv/bin/python as it
#                                                          #   is, installs nothing
#   bash tools/gpu_check/gpu_check.sh --prepare WHEEL_DIR  # for a GPU machine without .venv (its own Python and
#                                                          #   torch): copies WHEEL_DIR/*.whl (mmcv built for that
#                                                          #   torch, mmengine, mmsegmentation, mmdet, mmpretrain
#                                                          #   and their pure-Python dependencies) into .gpu-wheels/
#                                                          #   (git-ignored) to carry there
#   bash tools/gpu_check/gpu_check.sh --out DIR            # there, without .venv: installs .gpu-wheels/*.whl into
#                                                          #   a temporary folder beside the machine's torch, then
#                                                          #   checks
#
# Other arguments go to `python -m tools.gpu_check.check` (--dry-run, --deadline-min 7.5, --only smoke, ...).
# The deadline counts from this script's start, so a wheels' install is inside it. The python is
# $PYTHON, else .venv/bin/python (then nothing is installed), else python3. A check killed by a signal
# (a crash in a CUDA library, say) is resumed with --resume: what it had finished is kept.
set -euo pipefail
started=$(date +%s)
cd "$(dirname "$0")/../.."
wheels=.gpu-wheels

if [ "${1:-}" = --prepare ]; then
    source_dir=${2:-}
    if [ -z "$source_dir" ] || ! compgen -G "$source_dir/*.whl" > /dev/null; then
        echo "ERROR: --prepare needs the folder of the wheels to carry${source_dir:+ ($source_dir has no *.whl)}" >&2
        echo "  -> bash tools/gpu_check/gpu_check.sh --prepare WHEEL_DIR" \
             "  (WHEEL_DIR: the *.whl built for the GPU machine's Python and torch)" >&2
        exit 2
    fi
    mkdir -p "$wheels"
    cp "$source_dir"/*.whl "$wheels"/
    git rev-parse --short HEAD > "$wheels"/COMMIT 2>/dev/null || true
    echo "prepared $wheels/: $(ls "$wheels"/*.whl | wc -l) wheels ($(du -sh "$wheels" | cut -f1))"
    exit 0
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
install_s=
if [ "$python" = .venv/bin/python ]; then
    echo "[gpu_check.sh] $python as it is (installing nothing)"
elif compgen -G "$wheels/*.whl" > /dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    install_s=$(( $(date +%s) - started ))
    echo "[gpu_check.sh] installed $(ls "$wheels"/*.whl | wc -l) wheels into $site in ${install_s} s"
fi
export PYTHONUNBUFFERED=1 GPU_CHECK_INSTALL_S="$install_s" GPU_CHECK_COMMAND="bash tools/gpu_check/gpu_check.sh $*"

resume=()
for attempt in 1 2 3; do
    code=0
    "$python" -m tools.gpu_check.check --started-at "$started" "$@" "${resume[@]}" || code=$?
    if [ "$code" -lt 128 ]; then exit "$code"; fi
    echo "[gpu_check.sh] the check died (exit $code); resuming" >&2
    resume=(--resume)
done
exit "$code"
