"""The runtime every script shares: hooks, launcher, checkpoint policy, resume, summary.json.

`defaults()` returns the runtime part of a config (MMSegmentation's default_runtime.py and the
schedule files' default_hooks, with the user's checkpoint policy). `run()` is each script's entry:
preflight checks, --dump-config, the banner, the mmengine Runner, summary.json and a picture of
predictions, with every user-fixable problem reported as one error and exit code 2.
"""
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from common import checks, cli, pretrained, resilience, safe_load
from common.errors import SetupError

# Start-up time (summary.json `startup_s`) counts from the script's first import for the first run of
# a process, and from run() for later ones (the tests run many scripts in one process).
_LAUNCHED = time.time()
_run_starts = []

# ---------------------------------------------------------------- launcher and world

def launcher_from_env(env=os.environ):
    """'pytorch' under torchrun, 'slurm' under `srun` with several tasks, else 'none'. So
    `python train_x.py`, `torchrun --nproc_per_node=N train_x.py` and `srun python train_x.py`
    all work without a --launcher flag."""
    if 'RANK' in env and 'WORLD_SIZE' in env:
        return 'pytorch'
    if 'SLURM_PROCID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
        return 'slurm'
    return 'none'


def world_size_from_env(env=os.environ):
    launcher = launcher_from_env(env)
    if launcher == 'pytorch':
        return int(env['WORLD_SIZE'])
    if launcher == 'slurm':
        return int(env['SLURM_NTASKS'])
    return 1


def rank_from_env(env=os.environ):
    return int(env.get('RANK', env.get('SLURM_PROCID', '0')) if launcher_from_env(env) != 'none' else 0)


# ---------------------------------------------------------------- config pieces

def defaults(*, work_dir, val_interval, seed, log_interval=50, keep_checkpoints=3, accumulate=1,
             save_best='mIoU'):
    """default_runtime.py + the schedule's default_hooks, with: a checkpoint at every evaluation,
    the last `keep_checkpoints` kept plus the best mIoU one, text + JSON scalar + TensorBoard logs."""
    vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
    return dict(
        default_scope='mmseg',
        work_dir=work_dir,
        env_cfg=dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
                     dist_cfg=dict(backend='nccl')),
        vis_backends=vis_backends,
        # No fixed name: mmengine keeps one visualizer per name, so a second run in the same process
        # would write into the first run's folder. Unnamed, it takes the run's timestamp.
        visualizer=dict(type='SegLocalVisualizer', vis_backends=copy.deepcopy(vis_backends)),
        log_processor=dict(by_epoch=False),
        log_level='INFO',
        load_from=None,
        resume=False,
        randomness=dict(seed=seed),
        tta_model=dict(type='SegTTAModel'),
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=log_interval, log_metric_by_epoch=False),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=val_interval * accumulate,
                            max_keep_ckpts=keep_checkpoints, save_best=save_best, rule='greater'),
            sampler_seed=dict(type='DistSamplerSeedHook'),
            visualization=dict(type='SegVisualizationHook')),
    )


def defaults_for(s, save_best='mIoU'):
    """defaults() from a script's settings."""
    return defaults(work_dir=s.WORK_DIR, val_interval=s.VAL_INTERVAL, seed=s.SEED, log_interval=s.LOG_INTERVAL,
                    keep_checkpoints=s.KEEP_CHECKPOINTS, accumulate=s.ACCUMULATE, save_best=save_best)


def pretrained_init(path, prefix=None):
    """A backbone init_cfg loading `path`, or None (random init) when there is no file."""
    if path is None:
        return None
    init = dict(type='Pretrained', checkpoint=path)
    if prefix:
        init['prefix'] = prefix
    return init


def _walk(node, visit):
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def pretrained_paths(cfg):
    """Every weight file the model's initialisation will read."""
    found = []

    def visit(node):
        if isinstance(node.get('pretrained'), str):
            found.append(node['pretrained'])
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            found.append(node['checkpoint'])
    _walk(cfg.get('model', {}), visit)
    return found


def required_packages(cfg):
    """Packages named by scoped types in the config ('mmdet.DiceLoss' -> mmdet)."""
    scopes = set()

    def visit(node):
        kind = node.get('type')
        if isinstance(kind, str) and '.' in kind:
            scopes.add(kind.split('.')[0])
    _walk(cfg, visit)
    return sorted(scopes & {'mmdet', 'mmpretrain'})


def sync_bn_to_bn(cfg):
    """PyTorch's SyncBatchNorm runs only on GPUs; on a CPU (tests, the demo, gloo DDP) use BN."""
    def visit(node):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
    _walk(cfg, visit)


# ---------------------------------------------------------------- pretrained weights must fit

_IGNORED_MISSING = ('num_batches_tracked', 'relative_position_index')


@contextmanager
def weights_must_fit():
    """Watch every state-dict load during model initialisation; report missing and unexpected keys,
    and refuse when a checkpoint leaves parameters of the module it is loaded into uninitialised
    (e.g. torchvision's resnet50 into ResNetV1c, whose deep stem it lacks)."""
    import mmengine.runner.checkpoint as ckpt_module
    import torch
    from mmengine.logging import print_log
    original_mm, original_torch = ckpt_module.load_state_dict, torch.nn.Module.load_state_dict
    patched_modules = [m for m in list(sys.modules.values())
                       if getattr(m, 'load_state_dict', None) is original_mm]

    def audit(module, state_dict):
        expected = set(module.state_dict().keys())
        given = set(state_dict.keys())
        missing = sorted(k for k in expected - given if not k.endswith(_IGNORED_MISSING))
        unexpected = sorted(given - expected)
        name = type(module).__name__
        if unexpected:
            print_log(f'[weights] {name}: {len(unexpected)} unexpected keys ignored: {", ".join(unexpected[:8])}'
                      + (' ...' if len(unexpected) > 8 else ''), logger='current')
        # Normalisation layers a segmentation backbone adds on top of its classifier (Swin's norm0..3,
        # PoolFormer's GroupNorms) start as identity by design in the recipes; anything else left
        # out would stay random.
        norms = _norm_layer_keys(module)
        added_norms = [k for k in missing if k in norms]
        missing = [k for k in missing if k not in norms]
        if added_norms:
            print_log(f'[weights] {name}: {len(added_norms)} normalisation tensors not in the checkpoint start at '
                      f'their identity init, as in the recipe: {", ".join(added_norms[:8])}', logger='current')
        if missing:
            _refuse_unfit(name, missing, len(expected))
        else:
            print_log(f'[weights] {name}: all {len(expected) - len(added_norms)} other tensors loaded',
                      logger='current')

    def mm_load(module, state_dict, strict=False, logger=None):
        audit(getattr(module, 'module', module), state_dict)
        return original_mm(module, state_dict, strict, logger)

    def torch_load(self, state_dict, strict=True, assign=False):
        audit(self, state_dict)
        return original_torch(self, state_dict, strict, assign)

    for module in patched_modules:
        module.load_state_dict = mm_load
    torch.nn.Module.load_state_dict = torch_load
    try:
        yield
    finally:
        for module in patched_modules:
            module.load_state_dict = original_mm
        torch.nn.Module.load_state_dict = original_torch


def _norm_layer_keys(module):
    import torch.nn as nn
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return {f'{prefix}.{key}' if prefix else key
            for prefix, sub in module.named_modules() if isinstance(sub, norm_types)
            for key in sub.state_dict(keep_vars=True) if '.' not in key}


def _refuse_unfit(name, missing, total):
    shown = ', '.join(missing[:10]) + (' ...' if len(missing) > 10 else '')
    raise SetupError(
        f'the checkpoint being loaded does not fit {name}: {len(missing)} of its {total} tensors would stay '
        f'randomly initialised ({shown})',
        'use the checkpoint the recipe names (see pretrain/README.md), convert yours to this backbone, '
        'or train from scratch with --no-pretrained')


# ---------------------------------------------------------------- recording the run

def _make_recorder():
    from mmengine.hooks import Hook

    class RunRecorder(Hook):
        """Per-iteration time and data time (mmengine's own figures) and the last evaluation."""
        priority = 'LOWEST'

        def __init__(self):
            self.times, self.data_times, self.metrics = [], [], {}
            self.start_iter, self.startup_s = 0, None

        def before_train(self, runner):
            self.start_iter = runner.iter  # after a resume: the iteration it continues from

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            hub = runner.message_hub
            if self.startup_s is None:  # launch to the end of the first iteration: imports, build, workers
                self.startup_s = round(time.time() - _run_starts[-1], 2)
            self.times.append(float(hub.get_scalar('train/time').current()))
            self.data_times.append(float(hub.get_scalar('train/data_time').current()))

        def after_val_epoch(self, runner, metrics=None):
            self.metrics = {k: float(v) for k, v in (metrics or {}).items()}

    return RunRecorder()


def _steady(values):
    """Median of the iterations after start-up (the first few include cuDNN tuning and workers)."""
    if not values:
        return None
    skip = min(5, len(values) // 4)
    return statistics.median(values[skip:])


def summarize(runner, recorder, s, reference, status, wall_s, iters_done=None):
    import mmcv
    import mmseg
    import torch
    hub = runner.message_hub
    sec_per_iter, data_time = _steady(recorder.times), _steady(recorder.data_times)
    world = runner.world_size
    best_ckpt = hub.get_info('best_ckpt') or ''
    best_iter = int(best_ckpt.rsplit('_', 1)[-1].split('.')[0]) if best_ckpt.endswith('.pth') else None
    best = hub.get_info('best_score')
    cuda = torch.cuda.is_available()
    return dict(
        model=s.SCRIPT, variant=cli.variant_name(vars(s)), recipe=reference.get('config'),
        reference_mIoU=reference.get('mIoU'), status=status,
        start_iter=recorder.start_iter, iters_done=runner.iter if iters_done is None else iters_done, max_iters=runner.max_iters, accumulate=s.ACCUMULATE,
        world_size=world, batch_per_gpu=s.BATCH_PER_GPU, total_batch=s.BATCH_PER_GPU * world * s.ACCUMULATE,
        crop_size=list(s.CROP_SIZE), amp=s.speed['precision'] != 'fp32', precision=s.speed['precision'],
        speed=s.speed, startup_s=recorder.startup_s,
        mIoU=recorder.metrics.get('mIoU'), mAcc=recorder.metrics.get('mAcc'), aAcc=recorder.metrics.get('aAcc'),
        best_mIoU=float(best) if best is not None else None, best_iter=best_iter,
        sec_per_iter=round(sec_per_iter, 4) if sec_per_iter else None,
        img_per_sec=round(s.BATCH_PER_GPU * world / sec_per_iter, 2) if sec_per_iter else None,
        data_time=round(data_time, 4) if data_time is not None else None,
        data_time_share=round(data_time / sec_per_iter, 3) if sec_per_iter and data_time is not None else None,
        max_mem_mb=round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        wall_s=round(wall_s, 1),
        device=torch.cuda.get_device_name() if cuda else f'cpu ({platform.processor() or platform.machine()}, '
                                                          f'{torch.get_num_threads()} threads)',
        torch=torch.__version__, mmcv=mmcv.__version__, mmseg=mmseg.__version__,
    )


def save_predictions_picture(runner, path, count=4):
    """Validation images, their ground truth and the model's prediction, side by side (ADE palette)."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from PIL import Image
    dataset = runner.val_dataloader.dataset
    palette = np.array(dataset.metainfo['palette'] + [[0, 0, 0]] * (256 - len(dataset.metainfo['palette'])),
                       np.uint8)
    palette[255] = 0
    rows = []
    model = runner.model
    model.eval()
    with torch.no_grad():
        for index in range(min(count, len(dataset))):
            sample = model.test_step(pseudo_collate([dataset[index]]))[0]
            image = np.asarray(Image.open(sample.img_path).convert('RGB'))
            gt = sample.gt_sem_seg.data[0].cpu().numpy().astype(np.uint8)
            pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
            rows.append(np.concatenate([image, palette[gt], palette[pred]], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows)).save(path)
    return path


# ---------------------------------------------------------------- the entry point

def _reference_line(s, reference):
    if not reference.get('config'):
        chosen = ', '.join(f'{name}={getattr(s, name)}' for name in cli.VARIANT_SETTINGS if hasattr(s, name))
        return f'no reference numbers listed for {chosen or "this model"}'
    line = f'recipe: {reference["config"]} (reference mIoU {reference.get("mIoU")}'
    ref_crop = tuple(reference.get('crop_size', (512, 512)))
    if ref_crop != tuple(s.CROP_SIZE):  # e.g. a 640 recipe's model at the default 512 crop
        line += f' at crop {ref_crop[0]}x{ref_crop[1]}; this run crops {s.CROP_SIZE[0]}x{s.CROP_SIZE[1]}'
    return line + ')'


def banner(s, reference, world):
    total = s.BATCH_PER_GPU * world * s.ACCUMULATE
    ref_total = reference.get('total_batch', 16)
    lines = [f'[{s.SCRIPT}] {_reference_line(s, reference)}',
             f'[{s.SCRIPT}] total batch {total} = {s.BATCH_PER_GPU}/GPU x {world} GPU(s) x accumulate '
             f'{s.ACCUMULATE}; the reference trains with {ref_total}']
    if getattr(s, 'speed', None):
        from common import speed
        lines.append(f'[{s.SCRIPT}] speed: {speed.describe(s.speed)} (PRECISION={s.PRECISION}, '
                     f'CHANNELS_LAST={s.CHANNELS_LAST}; common/speed.py)')
    if total != ref_total and ref_total % (s.BATCH_PER_GPU * world) == 0:
        lines.append(f'[{s.SCRIPT}] to keep {ref_total} on {world} GPU(s): --accumulate '
                     f'{ref_total // (s.BATCH_PER_GPU * world)}')
    return '\n'.join(lines)


def dump_config(cfg, path):
    from mmengine.config import Config
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Config(copy.deepcopy(cfg)).dump(path)
    return path


def _check_packages(cfg):
    import importlib
    for package in required_packages(cfg):
        try:
            importlib.import_module(f'{package}.models')
        except Exception as exc:
            raise SetupError(f'this model needs {package}, which does not import: {type(exc).__name__}: {exc}',
                             'run `bash setup.sh` (it installs the pinned mmdet and mmpretrain)') from exc


def preflight(cfg, s):
    """Everything that can be checked before building: installation, pretrained files, checkpoints,
    the dataset. Raises SetupError."""
    from common import env_check
    env_check.mmcv_ops_status()
    _check_packages(cfg)
    for path in pretrained_paths(cfg):
        pretrained.require(path)
    if s.load_from:
        safe_load.load(s.load_from, trust=s.trust_checkpoint, what='--load-from checkpoint')
    if s.SKIP_BAD_SAMPLES:
        skip_bad_samples(cfg)
    elif rank_from_env() == 0:
        checks.dataset(cfg['train_dataloader']['dataset']['data_root'])


def skip_bad_samples(cfg):
    """Leave the samples the dataset check finds broken out of the train and val sets (by index,
    in the dataset's own sorted order) and say how many, instead of stopping."""
    from mmengine.logging import print_log
    root = cfg['train_dataloader']['dataset']['data_root']
    bad = checks.scan(root)
    for split, loader in (('train', 'train_dataloader'), ('val', 'val_dataloader'), ('val', 'test_dataloader')):
        if not bad[split]:
            continue
        dataset = cfg[loader]['dataset']
        total = len(checks.pairs(root, split))
        skipped = {index for index, *_ in bad[split]}
        dataset['indices'] = [i for i in range(total) if i not in skipped]
        if loader != 'test_dataloader':
            listed = '; '.join(f'{split}[{i}] {reason}' for i, _, _, reason in bad[split][:5])
            print_log(f'[data] skipping {len(skipped)} of {total} {split} samples (SKIP_BAD_SAMPLES): {listed}',
                      logger='current', level=30)


def _complete(path):
    """A checkpoint file whose zip directory is intact (a torch.save file cut short has none)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _start_cpu_process_group(cfg, timeout_s):
    """DDP on CPUs (gloo), e.g. the tests: mmengine's own init_dist calls torch.cuda.set_device,
    and its DDP wrapper passes device_ids, which CPU modules refuse. Start the group here (mmengine
    then leaves it alone) and wrap without device ids."""
    import datetime
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=timeout_s))
    cfg['model_wrapper_cfg'] = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                    find_unused_parameters=cfg.get('find_unused_parameters', False))


def latest_checkpoint(work_dir):
    """The newest complete checkpoint of WORK_DIR: the one `last_checkpoint` points at, or, if that
    pointer is missing, empty or points at nothing usable, the highest complete iter_N.pth."""
    work_dir = Path(work_dir)
    pointer = work_dir / 'last_checkpoint'
    target = pointer.read_text().strip() if pointer.is_file() else ''
    if target and Path(target).is_file() and _complete(target):
        return target
    numbered = sorted(work_dir.glob('iter_*.pth'), key=lambda p: int(p.stem.split('_')[1]), reverse=True)
    return next((str(p) for p in numbered if _complete(p)), None)


def _prepare_runtime(cfg, s):
    """Adjust the recipe to this machine and run: launcher, backend, CPU norms, resume."""
    import torch
    cfg['launcher'] = launcher_from_env()
    cfg['env_cfg']['dist_cfg']['timeout'] = s.DIST_TIMEOUT_S
    os.environ.setdefault('TORCH_NCCL_ASYNC_ERROR_HANDLING', '1')  # a dead rank fails the others
    from common import speed
    speed.apply(cfg, s.speed)
    speed.set_global_flags(s.speed)
    if s.speed['precision'] != 'fp32':
        speed.keep_deformable_attention_fp32()  # a no-op for models without it
    if not torch.cuda.is_available():
        cfg['env_cfg']['dist_cfg']['backend'] = 'gloo'
        sync_bn_to_bn(cfg)
        if cfg['launcher'] == 'pytorch':
            _start_cpu_process_group(cfg, s.DIST_TIMEOUT_S)
    resume_from, resume_iter = (None if s.no_resume else latest_checkpoint(cfg['work_dir'])), 0
    if resume_from:
        checkpoint = safe_load.load(resume_from, trust=s.trust_checkpoint, what='resume checkpoint')
        resume_iter = int(checkpoint.get('meta', {}).get('iter', 0))
        cfg.update(resume=True, load_from=resume_from)
    elif s.load_from:
        cfg.update(resume=False, load_from=s.load_from)
    return resume_from, resume_iter


def run(build_config, s, reference):
    """Build the config, check, train, write summary.json. The whole life of `python train_x.py`.
    `reference`: the script's REFERENCE; the numbers of the variant being trained (s.reference, from
    cli.parse) take its place."""
    _run_starts.append(time.time() if _run_starts else _LAUNCHED)
    reference = getattr(s, 'reference', reference)
    try:
        _run(build_config, s, reference)
    except SetupError as err:
        print(f'\nERROR: {err.what}', file=sys.stderr)
        if err.fix:
            print(f'  -> {err.fix}', file=sys.stderr)
        sys.exit(err.exit_code)


def _run(build_config, s, reference):
    safe_load.install(trust=s.trust_checkpoint)
    cfg = build_config(s)
    from common import speed
    s.speed = speed.plan(s)  # precision, channels_last...: printed in the banner, kept in summary.json
    if s.dump_config:
        print(f'wrote {dump_config(cfg, s.dump_config)}')
        return
    if s.eval_only or s.predict or s.export_onnx or s.flops:
        from common import inference  # evaluate / predict / export / flops: see common/inference.py
        inference.dispatch(cfg, s, reference)
        return
    if s.demo:
        from common import demo_data
        if not Path(s.DATA_ROOT).is_dir():
            demo_data.write(Path(s.DATA_ROOT).parent)
    preflight(cfg, s)
    if rank_from_env() == 0:
        resilience.remove_stale_temporaries(cfg['work_dir'])
    resume_from, resume_iter = _prepare_runtime(cfg, s)
    if resume_iter >= cfg['train_cfg']['max_iters']:
        # Rerunning a finished command: keep its results instead of overwriting them with an empty run.
        if rank_from_env() == 0:
            print(f'[{s.SCRIPT}] already finished: {resume_from} is iteration {resume_iter} of '
                  f'{cfg["train_cfg"]["max_iters"]}; results in {Path(cfg["work_dir"]) / "summary.json"}. '
                  'Raise --max-iters to train on, or --no-resume to start over.', flush=True)
        return
    world = world_size_from_env()
    if rank_from_env() == 0:
        print(banner(s, reference, world), flush=True)
        if resume_from:
            print(f'[{s.SCRIPT}] resuming from {resume_from}', flush=True)

    from mmengine.config import Config
    from common import speed
    resilience.install_atomic_writes()
    runner = speed.runner_class(s.speed).from_cfg(Config(cfg))
    recorder = _make_recorder()
    runner.register_hook(recorder)
    runner.register_hook(resilience.make_guard_hook(s.ON_NONFINITE_LOSS))
    resilience.install_signal_handlers()
    start, status, stopped_at = time.time(), 'failed', None
    try:
        with weights_must_fit():
            runner.train()
        status = 'finished'
    except resilience.Preempted as stop:
        status, stopped_at = f'interrupted: {stop} (checkpoint {stop.checkpoint})', stop.iteration
        print(f'[{s.SCRIPT}] {stop}; saved {stop.checkpoint}. Rerun the same command to resume.', flush=True)
        raise SystemExit(128 + stop.signum)
    except resilience.Diverged as exc:
        status = f'diverged: {exc}'
        raise SetupError(f'training diverged: {exc}',
                         f'lower --lr, check the data, or resume from {latest_checkpoint(cfg["work_dir"])}; '
                         '--on-nonfinite-loss skip skips such steps instead',
                         exit_code=resilience.EXIT_DIVERGED) from None
    except KeyboardInterrupt:
        status = 'interrupted'
        raise
    except SetupError as err:
        status = f'failed: {err.what}'
        raise
    except Exception as exc:
        status = f'failed: {type(exc).__name__}: {exc}'
        if resilience.is_disk_full(exc):
            raise resilience.disk_full_error(exc, cfg['work_dir'], latest_checkpoint(cfg['work_dir'])) from None
        traceback.print_exc()
        raise SystemExit(1)
    finally:
        if runner.rank == 0:
            summary = summarize(runner, recorder, s, reference, status, time.time() - start, stopped_at)
            summary_path = Path(cfg['work_dir']) / 'summary.json'
            try:
                resilience.atomic_write((json.dumps(summary, indent=2) + '\n').encode(), str(summary_path))
            except OSError as exc:  # a full disk must not hide the error that stopped the run
                print(f'[{s.SCRIPT}] could not write {summary_path}: {exc}', file=sys.stderr)
            print(f'[{s.SCRIPT}] wrote {summary_path}: ' + ', '.join(
                f'{k}={summary[k]}' for k in ('status', 'iters_done', 'mIoU', 'best_mIoU', 'sec_per_iter',
                                              'img_per_sec', 'max_mem_mb')), flush=True)
    if runner.rank == 0:
        picture = save_predictions_picture(runner, Path(cfg['work_dir']) / 'predictions.png')
        print(f'[{s.SCRIPT}] wrote {picture} (image | ground truth | prediction)', flush=True)
