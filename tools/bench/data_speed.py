"""How fast a script's training pipeline produces images on this machine's CPUs: can it feed the GPU?

    python -m tools.bench.data_speed train_pspnet.py --data-root data/ade/ADEChallengeData2016 \\
        [--workers 0,1,2] [--batches 30] [--target 96] [--json OUT.json] [script flags...]

Builds the script's own train dataloader (its recipe pipeline: JPEG decode, RandomResize (2048, 512)
x 0.5-2.0, RandomCrop with cat_max_ratio, flip, PhotoMetricDistortion, packing; the InfiniteSampler)
and times `--batches` batches after the first few (worker start-up), for each worker count. Prints
images/s, images/s per worker, and the workers it takes to reach `--target` images/s (the GPU's
training speed: the data pipeline stays under 5% of an iteration only if it is well above that).
Any flag of the script (`--crop-size`, `--batch-per-gpu`...) is passed to it.
"""
import argparse
import json
import math
import time
from pathlib import Path

WARMUP_BATCHES = 3
HEADROOM = 1.5  # workers must outpace the GPU: image sizes, and so batch times, vary


def load_settings(script, flags):
    """The script's settings with `flags` applied, and its build_config."""
    from common import cli, scripts
    module = scripts.load(script, Path.cwd())
    return cli.parse(vars(module), flags), module.build_config


def measure(loader_cfg, workers, batches):
    """Images per second of the dataloader built from `loader_cfg` with `workers` processes."""
    import copy
    from mmengine.runner import Runner
    cfg = copy.deepcopy(loader_cfg)
    cfg.update(num_workers=workers, persistent_workers=False)
    loader = Runner.build_dataloader(cfg, seed=0)
    batch_size = cfg['batch_size']
    it = iter(loader)
    for _ in range(WARMUP_BATCHES):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    del it
    return dict(workers=workers, batches=batches, batch_size=batch_size,
                img_per_sec=round(batches * batch_size / seconds, 2), sec_per_batch=round(seconds / batches, 4))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('script', help='a train_*.py')
    parser.add_argument('--workers', default='0,1,2', help='worker counts to try, comma separated')
    parser.add_argument('--batches', type=int, default=30, help='batches timed per worker count')
    parser.add_argument('--target', type=float, default=None, help='img/s the GPU trains at (for the workers needed)')
    parser.add_argument('--json', metavar='PATH', help='also write the results here')
    args, flags = parser.parse_known_args(argv)
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    s, build_config = load_settings(args.script, flags)
    from common import checks
    loader_cfg = build_config(s)['train_dataloader']
    checks.dataset(loader_cfg['dataset']['data_root'], splits=('train',))
    rows = []
    for workers in (int(w) for w in args.workers.split(',')):
        row = measure(loader_cfg, workers, args.batches)
        row['img_per_sec_per_worker'] = round(row['img_per_sec'] / max(1, workers), 2)
        rows.append(row)
        print(f'{args.script}: {workers} worker(s): {row["img_per_sec"]:.1f} img/s '
              f'({row["sec_per_batch"] * 1000:.0f} ms per batch of {row["batch_size"]}; '
              f'{row["img_per_sec_per_worker"]:.1f} img/s per worker)', flush=True)
    result = dict(script=args.script, data_root=loader_cfg['dataset']['data_root'], crop_size=list(s.CROP_SIZE),
                  rows=rows)
    per_worker = max((r['img_per_sec_per_worker'] for r in rows if r['workers'] > 0), default=None)
    if args.target and per_worker:
        # Data time stays under 5% of an iteration when the workers have a batch ready before it is
        # asked for: their rate must exceed the GPU's, with headroom for the uneven image sizes.
        result['target_img_per_sec'] = args.target
        result['workers_for_target'] = math.ceil(HEADROOM * args.target / per_worker)
        print(f'{args.script}: to feed {args.target:g} img/s with {HEADROOM:g}x headroom: '
              f'{result["workers_for_target"]} workers at {per_worker:.1f} img/s each', flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
    return result


if __name__ == '__main__':
    main()
