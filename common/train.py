"""One training run: adapt the config to this machine, build the Runner, train, record the run.

`prepare()` adds what the recipe does not say (launcher, backend, CPU norms, the speed plan, resume);
`train()` runs mmengine's Runner with the run's hooks (per-iteration record, safety hook) and
always writes summary.json, whatever stopped the run; `banner()` is what a run prints first.
"""
import contextlib
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

from common import batched_eval, checkpoints, cli, config, console, deferred, dist, faults, files, out_of_memory, resilience, resume, scripts, speed, trackers, validate, weights_fit
from common.errors import SetupError


# ---------------------------------------------------------------- before the Runner

def prepare(cfg, s, plan):
    """Adjust the recipe to this machine and run: launcher, backend, speed levers, CPU norms, resume.
    Returns (checkpoint to resume from or None, its iteration)."""
    import torch
    cfg['launcher'] = dist.launcher_from_env()
    cfg['env_cfg']['dist_cfg']['timeout'] = s.DIST_TIMEOUT_S
    os.environ.setdefault('TORCH_NCCL_ASYNC_ERROR_HANDLING', '1')  # a dead rank fails the others
    speed.apply(cfg, plan)
    checkpoints.write_atomically(cfg)
    if not torch.cuda.is_available():
        cfg['env_cfg']['dist_cfg']['backend'] = 'gloo'
        config.sync_bn_to_bn(cfg)
        if cfg['launcher'] == 'pytorch':
            dist.start_cpu_process_group(cfg, s.DIST_TIMEOUT_S)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader] = batched_eval.batched(cfg[loader], batched_eval.size(s.EVAL_BATCH, torch.cuda.is_available()))
    resilience.survive_group_signals(cfg, dist.rank_from_env())
    if cfg.get('val_evaluator', {}).get('type') == 'IoUMetric':  # the same numbers, and the per-class table kept
        cfg['val_evaluator'] = dict(cfg['val_evaluator'], type='KeptAreasIoUMetric')
    # So the config the run writes (work_dir/<time>/vis_data/config.py) builds elsewhere too: the
    # modules that register its worker init, samplers and loops.
    config.add_imports(cfg, 'common.resilience', 'common.batched_eval', 'common.resume', 'common.checkpoints',
                       'common.class_table', 'common.out_of_memory',
                       *(['common.trackers'] if set(trackers.HELD) & config.types_in(cfg) else []))
    resumed = resume.plan(cfg, s)
    out_of_memory.adaptive(cfg)  # after resume.plan, which may give it its own loop (built on this one)
    return resumed


@contextlib.contextmanager
def changes_of_a_run(cfg, plan):
    """What a run changes in torch, mmseg and mmengine beyond the parts it registers (optimizer
    wrappers, loops, samplers, hooks, the checkpoint file backend), undone when it ends, so that
    whatever runs next in the process (another run, a notebook's code) meets the stock libraries."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(speed.global_flags(plan))          # TF32 (GPU)
        stack.enter_context(speed.sync_free_accuracy())        # mmseg heads' logged accuracy
        if _backbone_type(cfg) in ('BEiT', 'MAE'):
            from common import fixed_window
            stack.enter_context(fixed_window.resizing())       # pretrained tables without scipy's interp2d
        stack.enter_context(faults.loss_faults())              # tests only (ADE_TRAIN_FAULT)
        stack.enter_context(resilience.signal_handlers())      # pre-emption
        stack.enter_context(warnings.catch_warnings())         # console.attach sends them to the log file
        stack.enter_context(trackers.mlflow_file_store(cfg))   # MLflow 3's file store, asked for
        yield


def _backbone_type(cfg):
    return (cfg.get('model', {}).get('backbone') or {}).get('type')


def _demo_line(s):
    """--demo is a newcomer's first look: say what it trains (the script's demo may pick another variant
    and schedule than its recipe: cli.demo_settings)."""
    chosen = ''.join(f' {name}={getattr(s, name)}' for name in scripts.VARIANT_SETTINGS if hasattr(s, name))
    weights = 'from scratch' if s.PRETRAINED is None else f'from {s.PRETRAINED}'
    return (f'demo: train_{s.SCRIPT}.py{chosen} {weights} on the generated demo data ({s.DATA_ROOT}), '
            f'{s.MAX_ITERS} iterations of {s.BATCH_PER_GPU} crops {s.CROP_SIZE[0]}x{s.CROP_SIZE[1]} at LR {s.LR}, '
            'then evaluated on its validation images')


def _reference_line(s):
    reference = s.reference
    if not reference.get('config'):
        chosen = ', '.join(f'{name}={getattr(s, name)}' for name in scripts.VARIANT_SETTINGS if hasattr(s, name))
        return f'no reference numbers listed for {chosen or "this model"}'
    miou = reference.get('mIoU')
    line = f'recipe: {reference["config"]} (' + ('no published mIoU' if miou is None else f'reference mIoU {miou}')
    ref_crop = tuple(reference.get('crop_size', (512, 512)))
    if ref_crop != tuple(s.CROP_SIZE):  # e.g. a 640 recipe's model at the default 512 crop
        line += f' at crop {ref_crop[0]}x{ref_crop[1]}; this run crops {s.CROP_SIZE[0]}x{s.CROP_SIZE[1]}'
    # Settings the recipe's command passes that this run does not (e.g. Twins FPN's 80k at LR 1e-4).
    unlike = [f'{cli.flag_name(k)} {v}' for k, v in reference.get('flags', {}).items() if getattr(s, k, v) != v]
    if unlike:
        line += f'; the recipe runs with {" ".join(unlike)}'
    return line + ')'


def banner(s, world, plan=None, sync_bn=False, cuda=None):
    """The run's first lines: the recipe and its numbers, the total batch against the recipe's, the
    speed plan, the --accumulate that restores the recipe's batch, and (`sync_bn`: the recipe
    normalises with SyncBN) what batch normalisation sees in this run."""
    total = s.BATCH_PER_GPU * world * s.ACCUMULATE
    ref_total = s.reference.get('total_batch', 16)
    lines = [f'[{s.SCRIPT}] {_demo_line(s)}'] if getattr(s, 'demo', False) else []
    lines += [f'[{s.SCRIPT}] {_reference_line(s)}',
             f'[{s.SCRIPT}] total batch {total} = {s.BATCH_PER_GPU}/GPU x {world} GPU(s) x accumulate '
             f'{s.ACCUMULATE}; the reference trains with {ref_total}']
    if plan:
        lines.append(f'[{s.SCRIPT}] speed: {speed.describe(plan)} (PRECISION={s.PRECISION}, '
                     f'CHANNELS_LAST={s.CHANNELS_LAST}; common/speed.py)')
    if total != ref_total and ref_total % (s.BATCH_PER_GPU * world) == 0:
        lines.append(f'[{s.SCRIPT}] to keep {ref_total} on {world} GPU(s): --accumulate '
                     f'{ref_total // (s.BATCH_PER_GPU * world)}')
    if sync_bn:
        lines += _norm_batch_lines(s, world, ref_total, cuda)
    lines += [f'[{s.SCRIPT}] note: {note}' for note in validate.notes(s)]
    return '\n'.join(lines)


def _norm_batch_lines(s, world, ref_total, cuda=None):
    """SyncBN is BN when the run is not distributed on GPUs (mmengine converts it on one GPU, this
    project on a CPU): each BN layer then normalises over BATCH_PER_GPU images, not the recipe's
    total; --accumulate restores the optimizer's batch, not BN's."""
    import torch
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda and world > 1:
        return []  # real SyncBN over BATCH_PER_GPU x world
    per_step = s.BATCH_PER_GPU
    line = (f'[{s.SCRIPT}] BN: the recipe\'s SyncBN normalises over {ref_total} images; here each process '
            f'normalises alone, over {per_step} image(s) per step (--accumulate restores the optimizer\'s batch, '
            'not BN\'s)')
    nearer = next((b for b in (8, 4) if b > per_step and ref_total % (b * world) == 0), None)
    if nearer:
        line += (f'. Nearer the recipe where memory allows: --batch-per-gpu {nearer} --accumulate '
                 f'{ref_total // (nearer * world)}')
    return [line]


# ---------------------------------------------------------------- recording the run

def _make_recorder(started):
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
                self.startup_s = round(time.time() - started, 2)
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


def summarize(runner, recorder, s, plan, status, wall_s, iters_done=None):
    """summary.json: what ran, how far, how fast, how well, on what."""
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
    reference = s.reference
    return dict(
        model=s.SCRIPT, variant=scripts.variant_name(vars(s)), recipe=reference.get('config'),
        reference_mIoU=reference.get('mIoU'), status=status,
        start_iter=recorder.start_iter, iters_done=runner.iter if iters_done is None else iters_done,
        max_iters=runner.max_iters, accumulate=s.ACCUMULATE, out_of_memory=out_of_memory.adaptations(runner),
        world_size=world, batch_per_gpu=s.BATCH_PER_GPU, total_batch=s.BATCH_PER_GPU * world * s.ACCUMULATE,
        crop_size=list(s.CROP_SIZE), amp=plan['precision'] != 'fp32', precision=plan['precision'],
        speed=plan, startup_s=recorder.startup_s,
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


# ---------------------------------------------------------------- the run

def train(cfg, s, plan, started):
    """Build mmengine's Runner from the prepared config and train; summary.json in every case.
    `started`: when this run began (its summary's startup_s counts from there)."""
    with changes_of_a_run(cfg, plan):
        _train(cfg, s, plan, started)


_RUNS = itertools.count(1)  # the runs of this process


def _train(cfg, s, plan, started):
    # mmengine keeps one logger, message hub and visualizer per experiment name, by default the launch's
    # second: a second run started in the same second (tests, notebooks) would share the first one's.
    cfg = dict(cfg, experiment_name=f'{s.SCRIPT}_run{next(_RUNS)}')
    runner = console.runner_class(speed.runner_class(plan), s.verbose).from_cfg(config.for_runner(cfg))
    trackers.hold(runner.visualizer)  # W&B and MLflow runs stay open for summary.json's numbers
    recorder = _make_recorder(started)
    runner.register_hook(recorder)
    runner.register_hook(console.ProgressHook(s.SCRIPT, s.LOG_INTERVAL, s.BATCH_PER_GPU * runner.world_size))
    runner.register_hook(resilience.make_guard_hook(s.ON_NONFINITE_LOSS))
    runner.register_hook(resume.make_layout_hook())  # a resumed optimizer state in its parameters' layout
    start, status, stopped_at = time.time(), 'failed', None
    deferred.install(runner.message_hub)  # loss terms stay on the device until a log line reads them
    try:
        with weights_fit.must_fit():
            runner.train()
        status = 'finished'
    except resilience.Preempted as stop:
        status, stopped_at = f'interrupted: {stop} (checkpoint {stop.checkpoint})', stop.iteration
        print(f'[{s.SCRIPT}] {stop}; saved {stop.checkpoint}. Rerun the same command to resume.', flush=True)
        raise SystemExit(128 + stop.signum)
    except resilience.Diverged as exc:
        status = f'diverged: {exc}'
        raise SetupError(f'training diverged: {exc}',
                         f'lower --lr, check the data, or resume from {checkpoints.latest(cfg["work_dir"])}; '
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
        if checkpoints.is_disk_full(exc):
            raise checkpoints.disk_full_error(exc, cfg['work_dir']) from None
        traceback.print_exc()
        raise SystemExit(1)
    finally:
        deferred.uninstall(runner.message_hub)
        if runner.rank == 0:
            summary, path = summarize(runner, recorder, s, plan, status, time.time() - start, stopped_at), \
                Path(cfg['work_dir']) / 'summary.json'
            _write_summary(summary, path, s.SCRIPT)
            trackers.finish(runner.visualizer, summary, path)  # then the W&B run is finished, MLflow's ended
    if runner.rank == 0:
        save_predictions_picture(runner, Path(cfg['work_dir']) / 'predictions.png')
        print('\n'.join(end_lines(runner, s, recorder, time.time() - started)), flush=True)


def end_lines(runner, s, recorder, seconds):
    """The last lines of a finished run: what it reached, where everything is, what to run next."""
    work_dir = Path(runner.work_dir)
    hub = runner.message_hub
    best, best_ckpt = hub.get_info('best_score'), hub.get_info('best_ckpt')
    latest = checkpoints.latest(str(work_dir))
    miou = recorder.metrics.get('mIoU')
    reached = f'mIoU {miou:.2f}' if miou is not None else 'no evaluation'
    if best is not None:
        reached += f' (best {float(best):.2f}: {Path(best_ckpt).name})'
    given = s.command.replace(' --no-resume', '')
    lines = [f'finished {runner.iter} iterations in {console.duration(seconds)}: {reached}',
             f'results in {work_dir}: summary.json, predictions.png (image | ground truth | prediction)'
             + (', per_class/ (IoU and accuracy of each class)' if (work_dir / 'per_class').is_dir() else ''),
             f'log: {console.log_file(runner)} (environment, config, every log line, library warnings)']
    evaluated = best_ckpt or latest
    if evaluated:
        lines.append(f'evaluate: {given} --eval-only {evaluated}')
    if latest:
        lines.append(f'train on: the same command with a larger --max-iters resumes from {Path(latest).name}')
    return [f'[{s.SCRIPT}] {line}' for line in lines]


def _write_summary(summary, path, script):
    try:
        files.atomic_write(json.dumps(summary, indent=2) + '\n', str(path), fault_point='save')
    except OSError as exc:  # a full disk must not hide the error that stopped the run
        print(f'[{script}] could not write {path}: {exc}', file=sys.stderr)
    print(f'[{script}] {path}: ' + ', '.join(
        f'{k}={summary[k]}' for k in ('status', 'iters_done', 'mIoU', 'best_mIoU', 'sec_per_iter',
                                      'img_per_sec', 'max_mem_mb')), flush=True)
