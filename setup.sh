#!/usr/bin/env bash
# Create .venv at the repository root with the pinned training stack, then check it.
#
#   bash setup.sh            # idempotent: a second run only re-checks (seconds)
#
# Installs requirements/lock.txt (exact versions, sha256-checked), compiles mmcv 2.1.0 with its
# ops (CPU ops; CUDA ops too when a GPU and nvcc are present) into a wheel cache outside the
# checkout, so a fresh clone on the same machine reuses it, and ends with `python -m common.env_check`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip"
WHEEL_CACHE=${MMCV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ade20k-train/wheels}
# The registry's torch builds only: this machine's pip config adds a local torch+cpu wheel that
# pip would prefer, and with it `import torchvision` fails.
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*"; }

# Which mmcv build this machine needs: CPU ops, or CUDA ops for the GPU's architecture.
mmcv_variant() {
  if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    local arch
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')
    echo "cuda-sm${arch/./}"
  else
    echo cpu
  fi
}

VARIANT=$(mmcv_variant)
STAMP_VALUE="$(cat requirements/lock.txt requirements/mmcv.txt requirements/mmcv-build.txt | sha256sum | cut -c1-16)-$VARIANT"
STAMP_FILE="$VENV/.stack-stamp"

if [[ -f $STAMP_FILE && $(cat "$STAMP_FILE") == "$STAMP_VALUE" ]]; then
  log "stack already installed ($STAMP_VALUE)"
else
  [[ -x $VENV/bin/python ]] || { log "creating $VENV with $($PYTHON --version)"; $PYTHON -m venv "$VENV"; }
  log "installing requirements/lock.txt (hash-checked; torch is a large download the first time)"
  $PIP install --quiet --require-hashes --no-deps -r requirements/lock.txt

  MMCV_DIR="$WHEEL_CACHE/mmcv-2.1.0-torch$($VENV/bin/python -c 'import torch; print(torch.__version__)')-py$($VENV/bin/python -c 'import sys; print(*sys.version_info[:2], sep="")')-$VARIANT"
  if ! ls "$MMCV_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "compiling mmcv 2.1.0 with $VARIANT ops into $MMCV_DIR (about 12 min on 2 cores, once per machine)"
    export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
    if [[ $VARIANT == cuda-* ]]; then
      export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')
      log "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
    fi
    $PIP install --quiet --require-hashes --no-deps -r requirements/mmcv-build.txt
    mkdir -p "$MMCV_DIR"
    $PIP wheel --no-deps --no-build-isolation --require-hashes -r requirements/mmcv.txt -w "$MMCV_DIR"
    # Back to the runtime setuptools of the lock (torch needs >=77).
    $PIP install --quiet --require-hashes --no-deps -r <(grep -A1 '^setuptools==' requirements/lock.txt)
  fi
  $PIP install --quiet --no-deps --no-index --force-reinstall "$MMCV_DIR"/mmcv-2.1.0-*.whl
  echo "$STAMP_VALUE" > "$STAMP_FILE"
fi

$VENV/bin/python -m common.env_check
