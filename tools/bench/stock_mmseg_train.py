"""Stock MMSegmentation's training speed: an official config trained as the wheel's tools/train.py
trains it, in a process that imports nothing of this project, so no change this project makes to
mmengine, mmcv, mmseg or torch (see common/__init__.py) can reach it.

    python tools/bench/stock_mmseg_train.py pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py \\
        --data-root data/ade/ADEChallengeData2016 --iters 60 [--warmup 20] [--batch-per-gpu 2] [--amp]

CONFIG is relative to the configs inside the installed mmsegmentation wheel (mmseg/.mim/configs). What
tools/train.py does is done here (Config.fromfile, --amp's AmpOptimWrapper with a dynamic loss scale,
Runner.from_cfg or the config's runner_type, runner.train()) with the changes a speed measurement
needs and nothing else: the training set is --data-root (ADE20K's layout), no pretrained weights
(speed does not depend on them), no validation, no checkpoint saved, --iters iterations, and
--batch-per-gpu / --workers when given. The schedule, pipeline, optimizer, hooks and log interval are
the config's.

For each CONFIG it prints one JSON line: the median of mmengine's own per-iteration `time` after
--warmup iterations (sec_per_iter) and img/s from it, data_time, peak allocated GPU memory
(torch.cuda.max_memory_allocated, MB; null on a CPU), batch, iterations, build_s (the Runner, model,
optimizer and data loader built: the seconds before the first iteration), wall_s, the versions, and
`stock_check`: which functions this process trained with (OptimWrapper.update_params, the decode
heads' accuracy, MultiScaleDeformableAttention.forward, the MessageHub class, the TF32 flags), so a
reader can see that they were the packages' own. Several CONFIGs train one after the other in this
one process (the imports and the CUDA context are paid once, as the GPU check's own runs share its
process); each is built and trained as above, with the peak memory counted from its start.
Exit code 0 when every config trained, 1 when one failed (its line has `error`), 2 for bad arguments.
"""
import argparse
import gc
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

NEVER = 10 ** 9  # an iteration no run here reaches
OPENMMLAB = ('mmengine', 'mmcv', 'mmseg')  # whose decorators on each other's functions are stock


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='+', metavar='CONFIG', help='relative to mmseg/.mim/configs')
    p.add_argument('--data-root', required=True, help='an ADE20K-layout folder (images/training, annotations/training)')
    p.add_argument('--iters', type=int, default=60)
    p.add_argument('--warmup', type=int, default=20, help='iterations left out of the median')
    p.add_argument('--batch-per-gpu', type=int, default=0, help='0: the config\'s')
    p.add_argument('--workers', type=int, default=-1, help='data loader workers; -1: the config\'s')
    p.add_argument('--amp', action='store_true', help='what tools/train.py --amp does (fp16, dynamic loss scale)')
    p.add_argument('--work-dir', type=Path, help='mmengine\'s logs (default: a temporary folder, removed after)')
    args = p.parse_args(argv)
    configs_dir = _configs_dir()
    problems = [f'{c} is not a config of the installed mmsegmentation ({configs_dir})'
                for c in args.configs if not (configs_dir / c).is_file()]
    if len(set(args.configs)) != len(args.configs):
        problems.append('a config is named twice (mmengine names a run by its config and second)')
    if not (Path(args.data_root) / 'images' / 'training').is_dir():
        problems.append(f'{args.data_root}/images/training does not exist')
    if args.iters < 1 or not 0 <= args.warmup < args.iters:
        problems.append(f'--iters {args.iters} --warmup {args.warmup}: need 0 <= warmup < iters')
    if problems:
        print('ERROR: ' + '\n       '.join(problems) + '\n  -> see `python tools/bench/stock_mmseg_train.py --help`',
              file=sys.stderr)
        sys.exit(2)
    args.data_root = str(Path(args.data_root).resolve())
    return args


def _configs_dir():
    import mmseg
    return Path(mmseg.__file__).parent / '.mim' / 'configs'


def _without_pretrained(node):
    """Drop every pretrained-weights source from a config (model.pretrained, init_cfg of type
    Pretrained), keeping the random initialisation the modules define."""
    if isinstance(node, dict):
        if 'pretrained' in node:
            node['pretrained'] = None
        init = node.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            node['init_cfg'] = None
        elif isinstance(init, list):
            node['init_cfg'] = [i for i in init if not (isinstance(i, dict) and i.get('type') == 'Pretrained')]
        for value in node.values():
            _without_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _without_pretrained(value)


def build_config(config, args, work_dir):
    """tools/train.py's config, with the measurement's changes (module docstring)."""
    from mmengine.config import Config
    from mmengine.logging import print_log
    cfg = Config.fromfile(str(_configs_dir() / config))
    cfg.launcher = 'none'
    cfg.work_dir = str(work_dir)
    if args.amp:  # as tools/train.py
        if cfg.optim_wrapper.type == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current')
        else:
            assert cfg.optim_wrapper.type == 'OptimWrapper', (
                f'`--amp` is only supported when the optimizer wrapper type is `OptimWrapper` but got '
                f'{cfg.optim_wrapper.type}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = False
    _without_pretrained(cfg.model)
    loader = cfg.train_dataloader
    dataset = loader.dataset.get('dataset', loader.dataset)  # a dataset wrapper's inner set
    dataset.data_root = args.data_root
    if args.batch_per_gpu:
        loader.batch_size = args.batch_per_gpu
    if args.workers >= 0:
        loader.num_workers = args.workers
        loader.persistent_workers = args.workers > 0
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters, val_interval=NEVER)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=NEVER, save_last=False)
    return cfg


def stock_check(runner=None):
    """Which functions this process trains with, each named by its module and qualified name, and
    `stock`: true when each one's code is its package's own (a decorator of OpenMMLab's packages
    around it, such as mmengine's deprecation warning on mmcv's deformable attention, is stock too; a
    replacement or a wrapper from anywhere else is not), the TF32 flags are as this process started,
    and nothing of this project is imported."""
    import inspect
    import torch
    from mmcv.ops import MultiScaleDeformableAttention
    from mmengine.optim import OptimWrapper
    from mmseg.models.decode_heads import decode_head, point_head
    # the module, not the function of the same name that mmseg.models.losses exports
    original = importlib.import_module('mmseg.models.losses.accuracy').accuracy

    def folder(package):
        return Path(importlib.import_module(package).__file__).resolve().parent

    def files(obj):  # the code of obj and of each function it wraps, outermost first
        if inspect.isclass(obj):
            return [Path(inspect.getfile(obj)).resolve()]
        layers = [obj]
        while hasattr(layers[-1], '__wrapped__'):
            layers.append(layers[-1].__wrapped__)
        return [Path(layer.__code__.co_filename).resolve() for layer in layers]

    def own(obj, package):
        found = files(obj)
        return found[-1].is_relative_to(folder(package)) and all(
            any(f.is_relative_to(folder(p)) for p in OPENMMLAB) for f in found)

    def shown(path):  # a package's file from its package folder on; another file as it is
        text = str(path)
        return text.split('site-packages/')[-1] if 'site-packages/' in text else os.path.relpath(path)
    checked = {'OptimWrapper.update_params': (OptimWrapper.update_params, 'mmengine'),
               'decode_head.accuracy': (decode_head.accuracy, 'mmseg'),
               'point_head.accuracy': (point_head.accuracy, 'mmseg'),
               'MultiScaleDeformableAttention.forward': (MultiScaleDeformableAttention.forward, 'mmcv')}
    if runner is not None:
        checked['message_hub'] = (type(runner.message_hub), 'mmengine')
    # module.qualname, and for anything not its package's own, where its code is (a wrapper made with
    # functools.wraps carries the name of what it wraps)
    found = {key: f'{obj.__module__}.{obj.__qualname__}' + ('' if own(obj, package) else
                                                           f' (not {package}\'s own: code in {shown(files(obj)[0])})')
             for key, (obj, package) in checked.items()}
    foreign = sorted(key for key, (obj, package) in checked.items() if not own(obj, package))
    tf32 = _tf32()
    project = sorted(m for m in sys.modules if m.split('.')[0] in ('common', 'tools'))
    stock = (not foreign and not project and tf32 == TF32_AT_START
             and decode_head.accuracy is original and point_head.accuracy is original)
    return dict(found, not_own=foreign, tf32=tf32, tf32_as_at_start=tf32 == TF32_AT_START,
                project_modules=project, cudnn_benchmark=torch.backends.cudnn.benchmark, stock=stock)


def _tf32():
    import torch
    return dict(matmul=torch.backends.cuda.matmul.allow_tf32, cudnn=torch.backends.cudnn.allow_tf32,
                float32_matmul_precision=torch.get_float32_matmul_precision())


def versions():
    import importlib.metadata as metadata
    import torch
    found = dict(python=sys.version.split()[0], torch=torch.__version__, cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None)
    for package, dist in (('mmengine', 'mmengine'), ('mmcv', 'mmcv'), ('mmseg', 'mmsegmentation'), ('mmdet', 'mmdet')):
        try:
            found[package] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def train(config, args, work_dir):
    """One config trained (module docstring); its figures as a dict."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS
    cuda = torch.cuda.is_available()
    seen = {}

    class Record(Hook):
        """Copies mmengine's per-iteration time and data_time out of the message hub once, at the end
        (no read per iteration), and what the run trained with."""
        priority = 'LOWEST'

        def before_train(self, runner):
            seen['build_s'] = time.perf_counter() - start  # the Runner, model, optimizer, loader built
            seen['check'] = stock_check(runner)  # what its iterations run with

        def after_train(self, runner):
            for key in ('time', 'data_time'):
                try:
                    seen[key] = [float(v) for v in runner.message_hub.get_scalar(f'train/{key}').data[0]]
                except KeyError:
                    seen[key] = []
    cfg = build_config(config, args, work_dir)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.register_hook(Record(), priority='LOWEST')
    runner.train()
    wall = time.perf_counter() - start
    times, data_times = seen['time'][args.warmup:], seen['data_time'][args.warmup:]
    if not times:
        raise RuntimeError(f'no iteration time recorded after {args.warmup} warm-up iterations')
    sec = statistics.median(times)
    batch = cfg.train_dataloader.batch_size
    del runner
    return dict(config=config, batch_per_gpu=batch, iters=args.iters, warmup=args.warmup, amp=args.amp,
                sec_per_iter=round(sec, 4), img_per_sec=round(batch / sec, 2),
                data_time=round(statistics.median(data_times), 4) if data_times else None,
                max_mem_mb=round(torch.cuda.max_memory_allocated() / 2 ** 20) if cuda else None,
                build_s=round(seen['build_s'], 1), wall_s=round(wall, 1),
                device=torch.cuda.get_device_name() if cuda else 'cpu',
                stock_check=seen['check'])


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault('LOCAL_RANK', '0')  # as tools/train.py
    import torch
    base = args.work_dir or Path(tempfile.mkdtemp(prefix='stock_mmseg_'))
    failed = 0
    for config in args.configs:
        work_dir = base / Path(config).stem
        try:
            row = train(config, args, work_dir)
        except Exception as exc:
            traceback.print_exc()
            row, failed = dict(config=config, error=f'{type(exc).__name__}: {exc}'), failed + 1
        row['versions'] = versions()
        print(json.dumps(row), flush=True)
        gc.collect()  # the finished run's model, optimizer and loader workers, before the next one
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.work_dir is None:
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


TF32_AT_START = _tf32()  # read at import, before any Runner: this process's (PyTorch's) defaults

if __name__ == '__main__':
    sys.exit(main())
