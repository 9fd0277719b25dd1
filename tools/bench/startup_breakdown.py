"""Where the seconds go between launch and the first training iteration, phase by phase, on this machine.

    .venv/bin/python -m tools.bench.startup_breakdown train_fcn.py --data-root data/demo/ADEChallengeData2016 \
        --json benchmarks/startup/fcn_demo.json -- --crop-size 64     # after --: the script's own flags

Runs, in one fresh process, what `python train_x.py` runs (common/runtime.py), timing each phase:
imports, flags, config, the device and preflight checks (the dataset check twice: the first pass fills
its per-file cache, the second is what a later launch pays), the Runner's build, and the first
iteration (first batch from the workers, forward, backward, step). Then a resume of the same work
dir at its last iteration, timed to its first iteration, with this project's resume (the sampler
skips the trained batches) and with mmengine's (it loads and throws away every one of them).
"""
import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self):
        self.last, self.phases = time.perf_counter(), []

    def lap(self, name):
        now = time.perf_counter()
        self.phases.append((name, round(now - self.last, 3)))
        self.last = now


def first_iteration_seconds(cfg, s, plan):
    """Seconds from building the Runner to the end of its first iteration (then it stops)."""
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from common import speed

    class StopAfterFirst(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.done = time.perf_counter()
            raise KeyboardInterrupt

    start = time.perf_counter()
    runner = speed.runner_class(plan).from_cfg(Config(cfg))
    built = time.perf_counter()
    hook = StopAfterFirst()
    runner.register_hook(hook, priority='LOWEST')
    try:
        runner.train()
    except KeyboardInterrupt:
        pass
    return built - start, hook.done - built


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('script')
    parser.add_argument('--data-root', required=True)
    parser.add_argument('--iters', type=int, default=20, help='iterations trained before the resume is timed')
    parser.add_argument('--json')
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index('--') + 1:] if '--' in argv else []  # the script's own flags, passed as they are
    args = parser.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    args.flags = extra
    clock = Clock()
    clock.phases.append(('python start to this script', round(T0, 3) and 0.0))
    import torch  # noqa: F401
    clock.lap('import torch')
    import mmseg.models  # noqa: F401
    import mmengine.runner  # noqa: F401
    clock.lap('import mmengine, mmcv, mmseg models')
    from common import checks, cli, resume, scripts, speed, train
    module = scripts.load(args.script, ROOT)
    clock.lap('import common + the script')
    import tempfile
    work = tempfile.mkdtemp(prefix='startup_')
    flags = ['--data-root', args.data_root, '--work-dir', work, '--no-pretrained', '--max-iters', str(args.iters),
             '--val-interval', str(args.iters), *args.flags]
    s = cli.parse(vars(module), flags)
    clock.lap('flags (cli.parse, validate)')
    cfg = module.build_config(s)
    clock.lap('config (build_config)')
    checks.device(cfg)
    plan = speed.plan(s)
    clock.lap('device check + speed plan')
    from common import demo_data  # noqa: F401
    checks.CACHE_DIR = Path(tempfile.mkdtemp(prefix='checks_'))  # an empty cache: a first launch
    checks.preflight(cfg, s)
    clock.lap('preflight, first launch (dataset check fills its cache)')
    checks.preflight(cfg, s)
    clock.lap('preflight, later launches (cached dataset check)')
    train.prepare(cfg, s, plan)
    clock.lap('prepare (speed levers, resume plan)')
    build_s, first_s = first_iteration_seconds(cfg, s, plan)
    clock.phases += [('Runner build (model, optimizer, hooks)', round(build_s, 3)),
                     ('first iteration (workers start, first batch, forward, backward, step)', round(first_s, 3))]
    total = round(sum(p for _, p in clock.phases), 2)

    # Resume timing: train to --iters, then time a resume to its first iteration, both ways.
    module.main(flags + ['--num-workers', '2'] if '--num-workers' not in flags else flags)
    timings = {}
    import shutil
    # Twice each, in the order A B B A, keeping each way's faster run: load from other work on the
    # machine then biases neither way.
    for attempt, way in enumerate(('project', 'mmengine', 'mmengine', 'project')):
        # Each run resumes its own copy of the trained work dir: stopping after one iteration saves a
        # checkpoint (pre-emption), which the next run would otherwise resume from instead.
        copy = shutil.copytree(work, f'{work}_{attempt}_{way}')
        s2 = cli.parse(vars(module), flags + ['--work-dir', copy, '--max-iters', str(args.iters + 1)])
        cfg2 = module.build_config(s2)
        train.prepare(cfg2, s2, plan)
        if way == 'mmengine':  # undo the project's resume: mmengine replays every trained batch
            cfg2['train_dataloader']['sampler'] = dict(type='InfiniteSampler', shuffle=True)
            cfg2['train_cfg']['type'] = 'IterBasedTrainLoop'
        build2, first2 = first_iteration_seconds(cfg2, s2, plan)
        timings[way] = min(timings.get(way, float('inf')), round(build2 + first2, 3))
    assert resume  # the module that does the project's way
    rows = dict(script=args.script, flags=flags, phases=clock.phases, total_s=total,
                resume_at_iteration=args.iters, resume_to_first_iteration_s=timings,
                command=' '.join(['.venv/bin/python', '-m', 'tools.bench.startup_breakdown', *argv]))
    print(f'| phase | seconds |\n|---|---|')
    for name, seconds in clock.phases:
        print(f'| {name} | {seconds} |')
    print(f'| **launch to the end of the first iteration** | **{total}** |')
    print(f'\nresume at iteration {args.iters}, Runner build to the end of its first iteration: '
          f'{timings["project"]} s (this project) vs {timings["mmengine"]} s (mmengine replays the batches)')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
    main()
