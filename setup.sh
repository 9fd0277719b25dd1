#!/usr/bin/env bash
# Create .venv at the repository root with the pinned training stack, then check it.
#
#   bash setup.sh            # idempotent: a second run only re-checks (seconds)
#   bash setup.sh --plan     # print what it would install and build here, and from where; change nothing
#                            # (also SETUP_PLAN_ONLY=1; `--plan --resolve` asks pip where each locked file comes from)
#
# Installs the hash-locked torch stack (requirements/lock.txt, or requirements/lock-<TORCH_CUDA>.txt),
# compiles mmcv 2.1.0 with its ops into a wheel cache outside the checkout, so a fresh clone on the same
# machine reuses it, and ends with `python -m common.env_check`. mmcv gets CUDA ops when nvidia-smi shows
# a GPU (or TORCH_CUDA_ARCH_LIST names architectures, for a machine without one), built with the NVIDIA
# compiler packages of requirements/mmcv-cuda-build*.txt: no system CUDA toolkit is needed. Otherwise CPU
# ops. The choices and the settings that steer them (TORCH_CUDA, TORCH_CUDA_ARCH_LIST, CUDA_HOME) are
# made by tools/setup/plan.py, before anything is installed; a choice that cannot work stops there (exit 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip"
# The registry's torch builds only: this machine's pip config adds a local torch+cpu wheel that
# pip would prefer, and with it `import torchvision` fails.
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*"; }

# The plan: which torch lock and index, CPU or CUDA ops for which architectures, which nvcc, the mmcv cache dir.
PLAN_PY=$PYTHON
[[ -x $VENV/bin/python ]] && PLAN_PY=$VENV/bin/python
if [[ ${1:-} == --plan || ${SETUP_PLAN_ONLY:-} == 1 ]]; then
  [[ ${1:-} == --plan ]] && shift
  exec "$PLAN_PY" -m tools.setup.plan --plan "$@"
fi
PLAN=$("$PLAN_PY" -m tools.setup.plan --shell) || exit $?
eval "$PLAN"

STAMP_VALUE="$(cat "$LOCK" requirements/mmcv.txt requirements/mmcv-build.txt $CUDA_BUILD_LOCK | sha256sum | cut -c1-16)-$VARIANT"
STAMP_FILE="$VENV/.stack-stamp"

if [[ -f $STAMP_FILE && $(cat "$STAMP_FILE") == "$STAMP_VALUE" ]]; then
  log "stack already installed ($STAMP_VALUE)"
else
  [[ -x $VENV/bin/python ]] || { log "creating $VENV with $($PYTHON --version)"; $PYTHON -m venv "$VENV"; }
  log "installing $LOCK (hash-checked; torch is a large download the first time)${INDEX_ARGS[*]:+, with ${INDEX_ARGS[*]}}"
  $PIP install --quiet --require-hashes --no-deps -r "$LOCK" "${INDEX_ARGS[@]}"
  TORCH_INSTALLED=$($VENV/bin/python -c 'import torch; print(torch.__version__)')
  if [[ $TORCH_INSTALLED != "$TORCH_EXPECTED" ]]; then
    log "error: $LOCK installed torch $TORCH_INSTALLED, the plan expected $TORCH_EXPECTED (tools/setup/plan.py)"; exit 1
  fi

  if ! ls "$MMCV_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "compiling mmcv 2.1.0 with $VARIANT ops into $MMCV_DIR (CPU ops: about 12 min on 2 cores, once per machine)"
    export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
    if [[ $VARIANT == cuda* ]]; then
      if [[ $NVCC_FROM == registry ]]; then
        if [[ ! -x $CUDA_BUILD_DIR/home/bin/nvcc ]]; then
          log "installing the CUDA $TORCH_CUDA_VERSION compiler from $CUDA_BUILD_LOCK into $CUDA_BUILD_DIR (hash-checked)"
          rm -rf "$CUDA_BUILD_DIR"
          $PIP install --quiet --require-hashes --no-deps --target "$CUDA_BUILD_DIR/site" -r "$CUDA_BUILD_LOCK"
          $VENV/bin/python -m tools.setup.cuda_home "$CUDA_BUILD_DIR/home" "$CUDA_BUILD_DIR/site" \
            "$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
        fi
        export CUDA_HOME=$CUDA_BUILD_DIR/home
      else
        export CUDA_HOME=$SYSTEM_CUDA_HOME
      fi
      export PATH=$CUDA_HOME/bin:$PATH FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH_LIST
      log "CUDA ops for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST with nvcc $("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*, V\([0-9.]*\)$/\1/p') from CUDA_HOME=$CUDA_HOME ($NVCC_NOTE)"
    fi
    $PIP install --quiet --require-hashes --no-deps -r requirements/mmcv-build.txt
    mkdir -p "$MMCV_DIR"
    # --no-cache-dir: pip would reuse a wheel it built before from the same sdist (CPU ops for CUDA ones)
    $PIP wheel --no-cache-dir --no-deps --no-build-isolation --require-hashes -r requirements/mmcv.txt -w "$MMCV_DIR"
    # Back to the runtime setuptools of the lock (torch needs >=77).
    $PIP install --quiet --require-hashes --no-deps -r <(grep -A1 '^setuptools==' "$LOCK")
  fi
  $PIP install --quiet --no-deps --no-index --force-reinstall "$MMCV_DIR"/mmcv-2.1.0-*.whl
  echo "$STAMP_VALUE" > "$STAMP_FILE"
fi

$VENV/bin/python -m common.env_check
