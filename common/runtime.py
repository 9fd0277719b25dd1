"""The top of every train script: its runtime config and its whole life.

`defaults()` returns the runtime part of a config (MMSegmentation's default_runtime.py and the
schedule files' default_hooks, with the user's checkpoint policy). `run()` is each script's entry:
--dump-config, a checkpoint mode (common/infer/), or a training run: preflight checks, the banner,
the mmengine Runner (common/train.py), summary.json and a picture of predictions, with every
user-fixable problem reported as one error and exit code 2. Nothing in common/ imports this module.
"""
import copy
import time
from pathlib import Path

from common import activation_ckpt, checkpoints, checks, config, dist, gpu, resilience, scripts, speed, trackers, train, validate
from common.errors import reported

# Start-up time (summary.json `startup_s`) counts from the script's first import for the first run of
# a process, and from run() for later ones (the tests run many scripts in one process).
_LAUNCHED = time.time()
_run_starts = []


def defaults(*, work_dir, val_interval, seed, log_interval=50, keep_checkpoints=3, accumulate=1,
             save_best='mIoU', tracker='tensorboard', script='', variant=None):
    """default_runtime.py + the schedule's default_hooks, with: a checkpoint at every evaluation,
    the last `keep_checkpoints` kept plus the best mIoU one, text + JSON scalar logs and the trackers
    `tracker` names (common/trackers.py; 'tensorboard': TensorBoard events, as the recipes log)."""
    vis_backends = trackers.vis_backends(tracker, work_dir=work_dir, script=script, variant=variant)
    return dict(
        default_scope='mmseg',
        work_dir=work_dir,
        env_cfg=dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
                     dist_cfg=dict(backend='nccl')),
        vis_backends=vis_backends,
        # No fixed name: mmengine keeps one visualizer per name, so a second run in the same process
        # would write into the first run's folder. Unnamed, it takes the run's experiment name (train._train).
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
                    keep_checkpoints=s.KEEP_CHECKPOINTS, accumulate=s.ACCUMULATE, save_best=save_best,
                    tracker=s.TRACKER, script=s.SCRIPT, variant=scripts.variant_name(vars(s)))


def run(build_config, s):
    """Build the config, check, train, write summary.json: the whole life of `python train_x.py`."""
    _run_starts.append(time.time() if _run_starts else _LAUNCHED)
    with reported(blank_line=True):
        _run(build_config, s, _run_starts[-1])


def _dump(cfg, s):
    """--dump-config: the recipe as this command builds it, loadable by MMSegmentation's own tools
    (stock_tools: docs/stock_tools.md). What a run adds to its own copy when it starts (the speed
    plan, the loss guard, atomic checkpoint writes) is not in it: say so when the speed settings
    would train differently from the file."""
    from common import stock_tools  # not at the top: importing it is what a dumped config does in the tools
    print(f'wrote {config.dump(stock_tools.portable(cfg), s.dump_config)}')
    plan = speed.plan(s)
    levers = [name for name in ('channels_last', 'tf32', 'fused_optimizer', 'compile') if plan[name]]
    if cfg.get(activation_ckpt.KEY):
        print(f'[{s.SCRIPT}] note: {activation_ckpt.KEY} (--activation-ckpt) is in the file, but only a run of '
              f'train_{s.SCRIPT}.py reads it: MMSegmentation\'s tools train without it', flush=True)
    if plan['precision'] != 'fp32' or levers:
        print(f'[{s.SCRIPT}] note: the speed settings ({", ".join([plan["precision"], *levers])}) are applied by a run of '
              f'train_{s.SCRIPT}.py, not written in the file: MMSegmentation\'s tools/train.py trains it in fp32 '
              '(its --amp: fp16 with loss scaling)', flush=True)


def _run(build_config, s, started):
    validate.refuse(validate.paths(s), 'paths')  # the settings' values: cli.parse
    if s.DEVICE == 'cpu':
        gpu.use_cpu_only()  # before torch first looks at CUDA
    checkpoints.install(trust=s.trust_checkpoint)
    # Part of the model (its config says it), so before --dump-config; refused here, before anything is built,
    # where the backbone has none.
    cfg = activation_ckpt.apply(build_config(s), s.ACTIVATION_CKPT, s.SCRIPT)
    if s.dump_config:
        _dump(cfg, s)
        return
    checks.device(cfg)  # a GPU torch cannot use stops here, not as a silent CPU run
    plan = speed.plan(s)  # precision, channels_last...: printed in the banner, kept in summary.json
    from common import infer  # evaluate / predict / export / flops: see common/infer/
    if infer.requested(s):
        infer.dispatch(cfg, s, plan)
        return
    if s.demo:
        from common import demo_data
        if not Path(s.DATA_ROOT).is_dir():
            demo_data.write(Path(s.DATA_ROOT).parent)
    checks.preflight(cfg, s)
    sync_bn = 'SyncBN' in config.types_in(cfg['model'])  # before prepare() turns it into BN on a CPU
    rank0 = dist.rank_from_env() == 0
    if rank0:
        checkpoints.remove_stale_temporaries(cfg['work_dir'])
    resume_from, resume_iter = train.prepare(cfg, s, plan)
    unevaluated = resilience.eval_interrupted_at(cfg['work_dir']) == resume_iter  # redone by the run
    if resume_iter >= cfg['train_cfg']['max_iters'] and not unevaluated:
        # Rerunning a finished command: keep its results instead of overwriting them with an empty run.
        if rank0:
            print(f'[{s.SCRIPT}] already finished: {resume_from} is iteration {resume_iter} of '
                  f'{cfg["train_cfg"]["max_iters"]}; results in {Path(cfg["work_dir"]) / "summary.json"}. '
                  'Raise --max-iters to train on, or --no-resume to start over.', flush=True)
        return
    if rank0:
        print(train.banner(s, dist.world_size_from_env(), plan, sync_bn=sync_bn), flush=True)
        if activation_ckpt.describe(cfg):
            print(f'[{s.SCRIPT}] {activation_ckpt.describe(cfg)}', flush=True)
        if resume_from:
            print(f'[{s.SCRIPT}] resuming from {resume_from}', flush=True)
    train.train(cfg, s, plan, started)
