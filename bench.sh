#!/usr/bin/env bash
# Benchmark the train_*.py scripts: each trains a few hundred iterations, then one table and charts.
#
#   bash bench.sh                                   # every train_*.py, 300 iterations, all visible GPUs
#   bash bench.sh fcn pspnet segformer:mit-b2       # these models only (a BACKBONE, or HEAD, after ':')
#   bash bench.sh --gpus 8 --iters 500 --name h100x8
#   bash bench.sh --demo --gpus 0 --iters 20 fcn    # the generated demo data, on the CPU
#   bash bench.sh fcn -- --precision fp32 --batch-per-gpu 4   # flags after '--' go to every script
#
# Options (defaults in the settings below): --iters N, --gpus N (0: CPU; more than 1: torchrun),
# --data-root DIR, --demo, --eval-images N|all, --name NAME, --timeout SECONDS, --pretrained,
# --keep-weights, --flops-size H,W.
#
# Every script evaluates at its last iteration (mmengine's loop always does); to keep that short the
# scripts get a copy of the data root (symlinks) whose validation split is --eval-images images.
# Each model trains in work_dirs/bench/NAME/<model>/ (emptied first; --no-resume), which keeps its
# stdout.log, stderr.log, summary.json, JSON scalar logs and bench_run.txt (script, exit code,
# seconds, the exact command). A model that fails is recorded with the end of its stderr and the
# loop goes on. Then `python -m tools.bench.bench collect` writes benchmarks/NAME/results.csv,
# results.md, speed_memory.png and miou_vs_speed.png, with parameters and FLOPs at 512x512 (cached in
# benchmarks/complexity_cache.json). The exit status is 1 if any model failed. Training curves of
# runs: python -m tools.bench.plots curves work_dirs/bench/NAME/fcn work_dirs/bench/NAME/pspnet --out c.png
#
# The loop is bash so that adapting it (another launcher, environment, model list) is editing a few
# plain lines; reading logs and drawing the table is Python, in tools/bench/bench.py.
set -uo pipefail  # no -e: one failing model must not stop the others
cd "$(dirname "$0")"

# ---- settings: edit here, or pass the flag ----
ITERS=300                                  # training iterations (optimizer steps) per model
GPUS=auto                                  # GPUs per model; auto: all visible ones (0 on a CPU-only machine)
DATA_ROOT=data/ade/ADEChallengeData2016    # ADE20K; --demo: data/demo/ADEChallengeData2016 (made if missing)
EVAL_IMAGES=50                             # the final evaluation runs on this many validation images; 'all'
NAME=''                                    # results: benchmarks/NAME/; default gpu<N>-<ITERS>it or cpu-<ITERS>it
TIMEOUT=3600                               # seconds a model may take; then it is stopped like a pre-emption
                                           # (SIGTERM: checkpoint kept, recorded as timed out)
PRETRAINED=0                               # 1: load pretrained backbones from pretrain/ (speed does not need them)
KEEP_WEIGHTS=0                             # 1: keep the checkpoints of these short runs (default: delete them)
FLOPS_SIZE=512,512                         # input size of the parameter / FLOP count
PY=${PY:-.venv/bin/python}                 # the project's Python (setup.sh makes it)

MODELS=()
SCRIPT_FLAGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --iters) ITERS=$2; shift 2 ;;
        --gpus) GPUS=$2; shift 2 ;;
        --data-root) DATA_ROOT=$2; shift 2 ;;
        --demo) DATA_ROOT=data/demo/ADEChallengeData2016; shift ;;
        --eval-images) EVAL_IMAGES=$2; shift 2 ;;
        --name) NAME=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --pretrained) PRETRAINED=1; shift ;;
        --keep-weights) KEEP_WEIGHTS=1; shift ;;
        --flops-size) FLOPS_SIZE=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        --) shift; SCRIPT_FLAGS=("$@"); break ;;
        -*) echo "ERROR: unknown option $1 (bash bench.sh --help)" >&2; exit 2 ;;
        *) MODELS+=("${1#train_}"); shift ;;
    esac
done
[ -x "$PY" ] || PY=python
# Every option and model name checked before anything runs (a typo costs a second, not an hour).
"$PY" -m tools.bench.bench_sh check --iters "$ITERS" --gpus "$GPUS" --eval-images "$EVAL_IMAGES" \
    --timeout "$TIMEOUT" --flops-size "$FLOPS_SIZE" "${MODELS[@]}" || exit 2
if [ ${#MODELS[@]} -eq 0 ]; then
    for script in train_*.py; do MODELS+=("$(basename "$script" .py | sed 's/^train_//')"); done
fi
if [ "$GPUS" = auto ]; then
    GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
fi
[ "$GPUS" -eq 0 ] && export CUDA_VISIBLE_DEVICES=''   # --gpus 0 on a GPU machine: really the CPU
if [ "$GPUS" -gt 1 ]; then
    LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS")   # = torchrun
else
    LAUNCH=("$PY")
fi
[ -n "$NAME" ] || NAME=$([ "$GPUS" -eq 0 ] && echo "cpu-${ITERS}it" || echo "gpu${GPUS}-${ITERS}it")
BENCH_DIR=work_dirs/bench/$NAME
OUT_DIR=benchmarks/$NAME

if [ "$DATA_ROOT" = data/demo/ADEChallengeData2016 ] && [ ! -d "$DATA_ROOT" ]; then
    "$PY" -m common.demo_data data/demo || exit 2
fi
if [ ! -d "$DATA_ROOT" ]; then
    echo "ERROR: no dataset at $DATA_ROOT: pass --data-root DIR (ADEChallengeData2016) or --demo" >&2
    exit 2
fi
mkdir -p "$BENCH_DIR"
TRAIN_ROOT=$DATA_ROOT
if [ "$EVAL_IMAGES" != all ]; then   # the same training data; fewer validation images (symlinks)
    TRAIN_ROOT=$("$PY" -m tools.bench.bench_sh val-subset "$DATA_ROOT" "$EVAL_IMAGES" "$BENCH_DIR/data") || exit 2
fi
printf 'name=%s\ndate=%s\nhost=%s\ngpus=%s\niters=%s\ndata_root=%s\ntrain_root=%s\nscript_flags=%s\n' \
    "$NAME" "$(date '+%Y-%m-%d %H:%M')" "$(hostname)" "$GPUS" "$ITERS" "$DATA_ROOT" "$TRAIN_ROOT" \
    "${SCRIPT_FLAGS[*]:-}" >"$BENCH_DIR/bench.txt"

hms() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

DEVICE=$([ "$GPUS" -eq 0 ] && echo CPU || echo "$GPUS GPU(s)")
echo "bench $NAME: ${#MODELS[@]} models x $ITERS iterations on $DEVICE, data $DATA_ROOT -> $OUT_DIR/"
trap 'echo "bench $NAME: interrupted; the finished runs are in $BENCH_DIR"; exit 130' INT   # Ctrl-C stops all
TOTAL=${#MODELS[@]}
FAILED=0
START=$SECONDS
for i in "${!MODELS[@]}"; do
    entry=${MODELS[$i]}
    model=${entry%%:*}
    variant=$([[ $entry == *:* ]] && echo "${entry#*:}")
    run=$model${variant:+-$variant}
    work=$BENCH_DIR/$run
    step="[$((i + 1))/$TOTAL] $run"
    elapsed=$((SECONDS - START))
    eta=$([ "$i" -gt 0 ] && hms $((elapsed * (TOTAL - i) / i)) || echo '?')
    echo "$step: training (elapsed $(hms $elapsed), ETA $eta)"

    rm -rf "$work" && mkdir -p "$work"
    cmd=("${LAUNCH[@]}" "train_$model.py" --max-iters "$ITERS" --val-interval "$ITERS" --work-dir "$work"
         --data-root "$TRAIN_ROOT" --no-resume)
    # The variant is a BACKBONE, or a HEAD in the scripts that have no BACKBONE (fastfcn:aspp).
    [ -n "$variant" ] && cmd+=("$(grep -q '^BACKBONE = ' "train_$model.py" 2>/dev/null && echo --backbone || echo --head)" "$variant")
    [ "$PRETRAINED" = 1 ] || cmd+=(--no-pretrained)
    cmd+=("${SCRIPT_FLAGS[@]}")
    started=$SECONDS
    # timeout signals the whole process group (workers, torchrun's ranks): the script saves a
    # checkpoint at its current iteration and exits; -k: SIGKILL if it has not after 60 s more.
    timeout -k 60 "$TIMEOUT" "${cmd[@]}" >"$work/stdout.log" 2>"$work/stderr.log"
    code=$?
    timed_out=0
    case $code in
        124) timed_out=1
             echo "ERROR: stopped after $TIMEOUT s (bench.sh --timeout); checkpoint kept in $work" >>"$work/stderr.log" ;;
        137) echo "ERROR: killed (SIGKILL: out of host memory, or --timeout)" >>"$work/stderr.log" ;;
    esac
    seconds=$((SECONDS - started))
    printf 'script=train_%s\nvariant=%s\nexit_code=%s\nseconds=%s\ntimed_out=%s\ncommand=%s\n' \
        "$model" "$variant" "$code" "$seconds" "$timed_out" "$(printf '%q ' "${cmd[@]}")" >"$work/bench_run.txt"
    # A timed-out run keeps its checkpoint: the same command (bench_run.txt) resumes it.
    [ "$KEEP_WEIGHTS" = 1 ] || [ "$timed_out" = 1 ] || rm -f "$work"/*.pth "$work/last_checkpoint"

    if [ "$code" -eq 0 ]; then
        speed=$(grep -o '"img_per_sec": [0-9.]*' "$work/summary.json" 2>/dev/null | grep -o '[0-9.]*$')
        echo "$step: done in $(hms $seconds), ${speed:-?} img/s"
    else
        FAILED=$((FAILED + 1))
        error=$("$PY" -m tools.bench.bench error "$work/stderr.log")   # its ERROR: line, or the exception
        echo "$step: $([ "$timed_out" = 1 ] && echo 'TIMED OUT' || echo FAILED) (exit $code) after $(hms $seconds): $error"
        echo "    full log: $work/stderr.log"
    fi
done
echo "bench $NAME: $((TOTAL - FAILED)) of $TOTAL models ran, in $(hms $((SECONDS - START)))"

"$PY" -m tools.bench.bench collect "$BENCH_DIR" --out "$OUT_DIR" --flops-size "$FLOPS_SIZE" || exit 2
[ "$FAILED" -eq 0 ]
