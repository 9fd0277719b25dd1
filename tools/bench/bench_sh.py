"""What bench.sh asks Python for before its loop: its options checked, and the short validation split.

    python -m tools.bench.bench_sh check [--iters N] [--gpus N|auto] [--eval-images N|all] [--timeout S]
                                         [--flops-size H,W] MODEL[:VARIANT] ...
    python -m tools.bench.bench_sh val-subset DATA_ROOT COUNT OUT_DIR

`check` lists every problem with the options at once (a model that is no script, a variant that
is not one, more GPUs than the machine has) and exits 2 before any model runs.
"""
import argparse
import re
import sys
from pathlib import Path

from common import scripts
from common.errors import SetupError, reported

# ---------------------------------------------------------------- bench.sh's options

def check(models, iters, gpus, eval_images, timeout, flops_size, root=scripts.ROOT):
    """Problems with bench.sh's options (a list of lines), found before any model runs."""
    problems = []
    names = scripts.all_names(root)
    for entry in models:
        model, _, variant = entry.removeprefix('train_').partition(':')
        if model not in names:
            problems.append(f'{entry}: there is no train_{model}.py (models: {" ".join(names)})')
            continue
        namespace = vars(scripts.load(model, root))
        setting = scripts.variant_setting(namespace)
        table = namespace.get({'BACKBONE': 'BACKBONES', 'HEAD': 'HEADS'}.get(setting), {})
        if variant and variant not in table:
            problems.append(f'{entry}: {variant!r} is not a {setting or "variant"} of train_{model}.py'
                            + (f' (one of: {", ".join(table)})' if table else ' (it has none)'))
    for flag, value, low in (('--iters', iters, 1), ('--timeout', timeout, 1)):
        if not (value.isdigit() and int(value) >= low):
            problems.append(f'{flag} {value}: must be a whole number >= {low}')
    if not (eval_images == 'all' or (eval_images.isdigit() and int(eval_images) >= 1)):
        problems.append(f'--eval-images {eval_images}: must be a whole number >= 1, or all')
    if gpus != 'auto':
        import torch
        visible = torch.cuda.device_count()
        if not gpus.isdigit():
            problems.append(f'--gpus {gpus}: must be a whole number (0: the CPU) or auto')
        elif int(gpus) > visible:
            problems.append(f'--gpus {gpus}: this machine has {visible} GPU(s) torch can use')
    if not re.fullmatch(r'\d+[,x ]\d+|\d+', flops_size.strip()):
        problems.append(f'--flops-size {flops_size}: must be H,W (two whole numbers)')
    return problems


# ---------------------------------------------------------------- a short evaluation

def val_subset(data_root, count, out_dir):
    """An ADEChallengeData2016 folder whose training split is DATA_ROOT's (a symlink) and whose
    validation split is `count` of its images, evenly spaced (symlinks): every script evaluates at
    its last iteration, and this keeps that evaluation short. Returns the folder to train on
    (DATA_ROOT itself when it has no more than `count` validation images)."""
    root = Path(data_root).resolve()
    images = sorted((root / 'images' / 'validation').glob('*.jpg'))
    if count <= 0 or count >= len(images):
        return root
    chosen = [images[i * len(images) // count] for i in range(count)]
    subset = Path(out_dir).resolve() / 'ADEChallengeData2016'
    for kind, suffix in (('images', '.jpg'), ('annotations', '.png')):
        (subset / kind).mkdir(parents=True, exist_ok=True)
        training = subset / kind / 'training'
        if not training.is_symlink():
            training.symlink_to(root / kind / 'training', target_is_directory=True)
        validation = subset / kind / 'validation'
        if validation.is_dir():
            for old in validation.iterdir():  # a previous subset: replace it
                old.unlink()
        validation.mkdir(exist_ok=True)
        for image in chosen:
            source = root / kind / 'validation' / (image.stem + suffix)
            (validation / source.name).symlink_to(source)
    return subset

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    options = commands.add_parser('check', help="bench.sh's options, checked before any model runs")
    for flag, default in (('--iters', '300'), ('--gpus', 'auto'), ('--eval-images', '50'), ('--timeout', '3600'),
                          ('--flops-size', '512,512')):
        options.add_argument(flag, default=default)
    options.add_argument('models', nargs='*')
    subset = commands.add_parser('val-subset', help='a data root whose validation split is COUNT images')
    subset.add_argument('data_root')
    subset.add_argument('count', type=int)
    subset.add_argument('out_dir')
    args = parser.parse_args(argv)
    if args.command == 'val-subset':
        print(val_subset(args.data_root, args.count, args.out_dir))
        return 0
    with reported():
        problems = check(args.models, args.iters, args.gpus, args.eval_images, args.timeout, args.flops_size)
        if problems:
            raise SetupError(f'{len(problems)} problem(s) with the options of bench.sh:\n    '
                             + '\n    '.join(problems), 'bash bench.sh --help lists them')
    return 0


if __name__ == '__main__':
    sys.exit(main())
