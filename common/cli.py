"""The settings block of a train script, as command line flags.

Every UPPER_SNAKE constant of a script whose value is a bool, int, float, str, tuple or None becomes
a `--kebab-case` flag (`MAX_ITERS` -> `--max-iters 200`, `CROP_SIZE` -> `--crop-size 256,256`,
`TF32` -> `--tf32/--no-tf32`), with the constant's trailing comment as its help. Flags replace the
constants before `build_config` runs, so every number derived from them follows. Dicts and lists
(the reference recipe, the variant tables) are data, not flags.
"""
import argparse
import re
import shlex
import sys
import types
import typing
from pathlib import Path

from common import scripts, validate
from common.errors import SetupError, report


# Settings every script has without writing them out: name -> (default, help).
COMMON_SETTINGS = dict(
    ACCUMULATE=(1, 'gradient accumulation: total batch = BATCH_PER_GPU x GPUs x ACCUMULATE; '
                   'MAX_ITERS and VAL_INTERVAL count optimizer steps'),
    NUM_WORKERS=(-1, 'dataloader workers per GPU process; -1: min(4, CPUs per process - 1)'),
    LOG_INTERVAL=(50, 'iterations between log lines (loss, lr, time, ETA)'),
    EVAL_BATCH=(0, 'validation images per batch, each batch of one resized shape (common/batched_eval.py); '
                   '0: by the device (8 on a GPU, 1 on a CPU, where batching was measured slower); 1: one at a time'),
    KEEP_CHECKPOINTS=(3, 'latest checkpoints kept in WORK_DIR, besides the best-mIoU one'),
    SKIP_BAD_SAMPLES=(False, 'leave out images/labels the dataset check finds broken (default: stop and name them)'),
    ON_NONFINITE_LOSS=('stop', "'stop': a NaN/inf loss ends the run (exit 3); 'skip': skip that step and count it"),
    DEVICE=('auto', "'auto': the GPU(s) torch can use, else the CPU; a GPU torch cannot use stops the run. "
                    "'cpu': the CPU even on a GPU machine"),
    TRACKER=('tensorboard', "where the scalars, the config and summary.json's numbers go besides the text log and "
                            "vis_data/scalars.json: 'tensorboard', 'wandb' (offline unless logged in), 'mlflow' "
                            "(WORK_DIR/mlruns, or MLFLOW_TRACKING_URI), several comma-separated, or 'none'; wandb "
                            'and mlflow need `make trackers` (common/trackers.py)'),
    DIST_TIMEOUT_S=(900, 'seconds a rank waits for the others before failing (instead of hanging)'),
    # Speed levers (common/speed.py): on by default where they are safe, GPU-only where they are GPU-only.
    CHANNELS_LAST=('auto', "NHWC memory layout: 'auto' (on a GPU), 'on' or 'off'"),
    TF32=(True, 'TF32 tensor cores for the matmuls and convolutions left in fp32 (GPU)'),
    FUSED_OPTIMIZER=('auto', "one fused kernel for the SGD/AdamW step: 'auto' (on a GPU), 'on' (the CPU too), 'off'"),
    COMPILE=(False, 'torch.compile the backbone and neck (slow first iterations; measure before turning on)'),
    # Memory (common/activation_ckpt.py): off by default, it costs about one more backbone forward per step.
    ACTIVATION_CKPT=(False, "recompute the backbone's block activations in the backward pass instead of keeping "
                            'them: less memory, slower steps (not every backbone has it: common/activation_ckpt.py)'),
)

# `--demo`: train on the generated demo dataset, small enough for a CPU (see common/demo_data.py).
# A script may add its own DEMO_SETTINGS over these: train_fcn.py's (`make demo`) trains its ResNet-18
# variant 100 iterations at LR 0.03, 87.7-88.3 mIoU, under 3 minutes on 2 cores held to AVX2 even on a
# shared machine (0.38 s/iter there when the other load is low; benchmarks/demo/README.md). The other
# scripts train their default model 200 iterations.
DEMO_DATA_ROOT = 'data/demo/ADEChallengeData2016'
DEMO_SETTINGS = dict(DATA_ROOT=DEMO_DATA_ROOT, PRETRAINED=None, CROP_SIZE=(64, 64), BATCH_PER_GPU=8,
                     MAX_ITERS=200, VAL_INTERVAL=200, LOG_INTERVAL=25)

_SETTING = scripts.SETTING
# Defaults of two run options, left None in the flags so that giving one without its mode is refused.
OPACITY, FLOPS_SIZE = 0.5, (512, 512)


def _comments(source):
    """Trailing comments of `NAME = value  # comment` (or `NAME: type = value  # comment`) lines: the
    help text of each setting."""
    found = {}
    for line in source.splitlines():
        match = re.match(r'^([A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=.*?#\s*(.+)$', line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def flag_name(setting):
    return '--' + setting.lower().replace('_', '-')


def parse_size(text):
    """'512,512', '512x512', '512 512' or '512' -> (512, 512): the H,W of a flag (in the flag's order)."""
    parts = [int(p) for p in re.split(r'[,x ]+', text.strip().lower()) if p]
    return tuple(parts * 2) if len(parts) == 1 else tuple(parts)


def _number_type(annotation):
    """float or int when a None-default setting is annotated `float | None` (or `int | None`)."""
    for kind in (float, int):
        if annotation is kind or kind in typing.get_args(annotation):
            return kind
    return None


def _add_setting(parser, name, default, help_text, annotation=None):
    flag = flag_name(name)
    shown = f'{help_text} (default: {default!r})' if help_text else f'default: {default!r}'
    shown = shown.replace('%', '%%')  # argparse formats help text with %
    if isinstance(default, bool):
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                            help=shown)
    elif isinstance(default, tuple):
        parser.add_argument(flag, dest=name, type=parse_size, default=argparse.SUPPRESS, metavar='H,W',
                            help=shown)
    elif isinstance(default, (int, float)):
        parser.add_argument(flag, dest=name, type=type(default), default=argparse.SUPPRESS, help=shown)
    elif default is None and _number_type(annotation):  # `LR: float | None = None`: --lr abc is refused
        parser.add_argument(flag, dest=name, type=_number_type(annotation), default=argparse.SUPPRESS, help=shown)
    else:  # str or None: a path, a name
        parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=shown)


def demo_settings(namespace):
    """What --demo sets: DEMO_SETTINGS, then the script's own DEMO_SETTINGS (a dict of its settings)
    over them, so that a script can pick the variant and schedule a CPU trains quickly."""
    return {**DEMO_SETTINGS, **namespace.get('DEMO_SETTINGS', {})}


def build_parser(namespace, doc=None):
    comments = _comments(Path(namespace['__file__']).read_text()) if namespace.get('__file__') else {}
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group('settings (the constants at the top of the script)')
    settings = scripts.settings_of(namespace)
    for name, (default, help_text) in COMMON_SETTINGS.items():
        settings.setdefault(name, default)
        comments.setdefault(name, help_text)
    annotations = namespace.get('__annotations__', {})
    for name, default in settings.items():
        _add_setting(group, name, default, comments.get(name, ''), annotations.get(name))

    run = parser.add_argument_group('run')
    run.add_argument('--demo', action='store_true',
                     help=f'train on the generated demo dataset ({DEMO_DATA_ROOT}, made if missing) with '
                          f'CPU-sized settings: {demo_settings(namespace)}; explicit flags still win')
    run.add_argument('--dump-config', metavar='PATH',
                     help='write the complete resolved config (mmengine.Config.fromfile loads it; MMSegmentation\'s '
                          'tools/train.py and tools/test.py run it: docs/stock_tools.md) and exit')
    run.add_argument('--load-from', metavar='CKPT', help='start from these weights (not a resume)')
    run.add_argument('--no-pretrained', action='store_true', help='train from scratch: no pretrained backbone')
    run.add_argument('--no-resume', action='store_true',
                     help="start over even if WORK_DIR holds a checkpoint (default: resume from WORK_DIR's last one)")
    run.add_argument('--verbose', action='store_true',
                     help="the console shows mmengine's whole output (environment, config, hooks, every log line, "
                          'the per-class table, library warnings), not only the progress lines; the log file always keeps it')
    run.add_argument('--trust-checkpoint', action='store_true',
                     help='load checkpoints with full pickle (can run code from the file): only for files you trust')

    _add_use_options(parser.add_argument_group('use a trained checkpoint (instead of training)'))
    return parser, settings


def _add_use_options(use):
    use.add_argument('--eval-only', metavar='CKPT', help='evaluate CKPT on the validation split and exit')
    use.add_argument('--tta', action='store_true', help='with --eval-only: multi-scale (0.5..1.75) + flip test')
    use.add_argument('--predict', nargs=2, metavar=('CKPT', 'INPUT'),
                     help='segment INPUT (an image, a folder or a video) with CKPT; writes to --out')
    use.add_argument('--out', metavar='DIR', help='output folder of --predict, --eval-only and --export-safetensors '
                                                     '(--export-onnx: a folder or FILE.onnx)')
    use.add_argument('--opacity', type=float, help=f'overlay opacity of --predict (0..1, default {OPACITY})')
    use.add_argument('--export-onnx', metavar='CKPT', help='export CKPT to ONNX (whole-image mode) and verify it')
    use.add_argument('--export-safetensors', metavar='CKPT',
                     help='write the weights of CKPT as model.safetensors (tensors only, no pickle) with a model '
                          'card README.md and config.py, into --out (default: CKPT\'s folder/<CKPT name>_safetensors)')
    use.add_argument('--flops', action='store_true', help='print parameters and FLOPs at --flops-size and exit')
    use.add_argument('--flops-size', type=parse_size, metavar='H,W',
                     help=f'input size of --flops (default {FLOPS_SIZE[0]},{FLOPS_SIZE[1]})')


def model_flags(argv, without=()):
    """`argv` less the 'use a trained checkpoint' options (and --trust-checkpoint, and the options of one
    value named in `without`) with their values: the flags that build the same model, to which another
    mode's options can be added."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_use_options(parser)
    parser.add_argument('--trust-checkpoint', action='store_true')
    for flag in without:
        parser.add_argument(flag)
    return parser.parse_known_args(argv)[1]


def parse(namespace, argv=None, doc=None):
    """Parse flags over a script's settings. Returns a SimpleNamespace of the final settings
    (UPPER_SNAKE) and run options (lower case), plus SCRIPT (e.g. 'fcn'), reference (the reference
    numbers of the variant being trained: reference_for) and argv (the flags as given, which a
    model card writes down)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser, settings = build_parser(namespace, doc)
    args = vars(parser.parse_args(argv))
    script = Path(namespace.get('__file__') or 'train_unknown.py').stem.removeprefix('train_')
    final = dict(settings)
    if args['demo']:
        final.update({k: v for k, v in demo_settings(namespace).items() if k in final})
        final['WORK_DIR'] = f'work_dirs/demo_{script}'
    final.update({k: v for k, v in args.items() if _SETTING.match(k)})
    if args['no_pretrained'] and 'PRETRAINED' in final:
        final['PRETRAINED'] = None
    if final.get('PRETRAINED') == '':
        final['PRETRAINED'] = None
    options = {k: v for k, v in args.items() if not _SETTING.match(k)}
    try:  # every setting against its range before anything else reads it (common/validate.py)
        validate.refuse(validate.values(namespace, final, options), 'values')
    except SetupError as err:
        report(err)
    # The command as given (the end of a run prints the commands that evaluate or continue it; a model
    # card writes it down, and argv, its flags, gives the model's flags: model_flags).
    command = f'python {Path(namespace.get("__file__") or "train_unknown.py").name} {shlex.join(argv)}'.rstrip()
    return types.SimpleNamespace(SCRIPT=script, reference=scripts.reference_for(namespace, final),
                                 command=command, argv=argv, **final, **options)


def choose(setting, value, table):
    """table[value], or a clear error listing the choices (BACKBONE = 'r50-d8' -> its entry)."""
    if value not in table:
        raise SetupError(f'{setting} = {value!r} is not one of: {", ".join(table)}',
                         f'pass {flag_name(setting)} with one of those, or edit the script')
    return table[value]
