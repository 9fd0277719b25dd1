"""The GPU check's measurements: each a function of the check's context that returns its results
(tools/gpu_check/check.py runs them in order, each within its time budget, and writes what they return).

A measurement that needs a feature the checkout may not have yet comes with a probe (`*_missing`)
that returns why it cannot run, recorded as 'not available', or None: it lights up once the feature
lands, with no change here unless the feature's name differs from the one below.
"""
import importlib.util
import math
import platform
import re
import shutil
import statistics
import subprocess

from common import checkpoints, cli, demo_data, scripts
from tools.bench import bench_sh, vs_stock
from tools.gpu_check import inprocess

EVAL_MODELS = ('fcn', 'segformer')      # evaluated in bf16 and fp32 on the same weights
SYNC_FREE_MODULE = 'common.deferred'    # logged values kept on the device: no host sync per iteration
SYNC_FREE_FLAGS = []                    # flags that turn it on, should it ever need any
EVAL_BATCH_SETTING = 'EVAL_BATCH'       # batched evaluation: validation images per forward pass
NUM_CLASSES = 150
# The smoke stage's order: the scripts most likely to fail first, so that a failure shows early and a
# stage cut short at its budget drops the least likely: mmcv's compiled ops and unusual layouts
# (PSANet's PSAMask, DMNet's dynamic filters, CCNet's criss-cross attention, PointRend's point
# sampling, the query-based heads with their matcher and deformable attention, K-Net's kernel updates,
# STDC's OHEM and boundary targets, the window-fixed ViTs BEiT and MAE); then the rest, the core six
# last: vs_stock trains each of them again.
SMOKE_FIRST = ('psanet', 'dmnet', 'ccnet', 'pointrend', 'maskformer', 'mask2former', 'knet', 'stdc', 'beit', 'mae')
# vs_stock's stock process gets this share of the stage's time, ours the rest: stock's iterations are
# slower (what is measured) and it pays a fresh process's start (imports, CUDA context) once.
STOCK_SHARE = 0.6


def smoke_order(names):
    """`names` in the smoke stage's order (SMOKE_FIRST, the rest as given, then the core scripts)."""
    first = [n for n in SMOKE_FIRST if n in names]
    core = [n for n in vs_stock.CORE if n in names and n not in first]
    return first + [n for n in names if n not in first and n not in core] + core


# ---------------------------------------------------------------- the machine and the data

def env(ctx):
    """The stack imports (common.env_check), mmcv's compiled ops run on the device, the GPU's facts."""
    from common import env_check
    info = env_check.check_stack()
    ctx.results['versions'] = {k: info[k] for k in ('python', 'torch', 'torchvision', 'mmengine', 'mmcv', 'mmseg',
                                                    'mmdet', 'mmpretrain')}
    gpu = ctx.results['gpu'] = gpu_facts()
    ops = cuda_ops(gpu['device'])
    problems = [f'{op}: {outcome}' for op, outcome in ops.items() if outcome != 'ok']
    if not ctx.dry and not gpu['cuda']:
        problems.append('no CUDA device (use --dry-run for the CPU)')
    elif gpu['cuda'] and not info['mmcv_cuda_ops']:
        problems.append('mmcv was built without CUDA ops')
    return dict(status='failed' if problems else 'finished', error='; '.join(problems) or None,
                device=gpu['name'], mmcv_cuda_ops=info['mmcv_cuda_ops'], ops=ops)


def gpu_facts():
    import torch
    cuda = torch.cuda.is_available()
    facts = dict(cuda=cuda, device='cuda' if cuda else 'cpu', torch_cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version() if cuda else None)
    if cuda:
        props = torch.cuda.get_device_properties(0)
        facts.update(name=props.name, count=torch.cuda.device_count(), memory_gib=round(props.total_memory / 2 ** 30, 1),
                     capability=f'{props.major}.{props.minor}', multiprocessors=props.multi_processor_count,
                     driver=_nvidia_smi('driver_version'), power_limit=_nvidia_smi('power.limit'))
    else:
        facts.update(name=f'cpu ({platform.processor() or platform.machine()})', count=0, driver=None)
    facts['slug'] = re.sub(r'[^a-z0-9]+', '-', props.name.lower()).strip('-') if cuda else 'cpu'
    return facts


def _nvidia_smi(field):
    try:
        out = subprocess.run(['nvidia-smi', f'--query-gpu={field}', '--format=csv,noheader'], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
        return out[0].strip() if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def cuda_ops(device):
    """mmcv's compiled PSAMask (PSANet) and MultiScaleDeformableAttention (Mask2Former) on `device`."""
    import torch
    from mmcv.ops import MultiScaleDeformableAttention, PSAMask

    def psa_mask():
        out = PSAMask('collect', (3, 3))(torch.randn(1, 9, 6, 6, device=device))
        return out.shape == (1, 36, 6, 6) and bool(torch.isfinite(out).all())

    def deformable_attention():
        attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=2, num_levels=1, num_points=2,
                                             batch_first=True).to(device)
        query = torch.randn(1, 16, 32, device=device)
        out = attn(query, value=query, reference_points=torch.rand(1, 16, 1, 2, device=device),
                   spatial_shapes=torch.tensor([[4, 4]], device=device), level_start_index=torch.tensor([0], device=device))
        return out.shape == (1, 16, 32) and bool(torch.isfinite(out).all())
    outcomes = {}
    for name, check in (('PSAMask', psa_mask), ('MultiScaleDeformableAttention', deformable_attention)):
        try:
            outcomes[name] = 'ok' if check() else 'wrong output'
        except Exception as exc:
            outcomes[name] = f'{type(exc).__name__}: {exc}'
    return outcomes


def data(ctx):
    """The synthetic set: ADE20K's layout, coding (0..150) and image size, and a copy whose validation
    split is one image (what training runs point at: their closing picture then costs one forward)."""
    p = ctx.plan
    out = ctx.work / 'data'
    shutil.rmtree(out, ignore_errors=True)
    root = demo_data.write(out, p['train_images'], p['val_images'], p['image_size'], num_classes=NUM_CLASSES)
    train_root = bench_sh.val_subset(root, 1, ctx.work / "data_train")
    return dict(status='finished', root=str(root), train_root=str(train_root), train_images=p['train_images'],
                val_images=p['val_images'], image_size='x'.join(map(str, p['image_size'])), classes=NUM_CLASSES)


def _roots(ctx):
    stage = ctx.results['stages']['data']
    return stage['root'], stage['train_root']


# ---------------------------------------------------------------- training runs

def smoke(ctx):
    """Every train_*.py, its defaults (the GPU fast path), a few iterations from scratch."""
    rows = ctx.stage.setdefault('scripts', {})
    _each(ctx, rows, ctx.scripts, lambda name: _train(ctx, 'smoke', name, ctx.plan['smoke_iters'], skip=1))
    return _verdict(rows)


def vs_stock_speed(ctx):
    """The core scripts beside stock MMSegmentation's training loop, same batch, data and iterations:
    stock first, every config in one process of its own (tools/bench/stock_mmseg_train.py, `_stock_run`),
    then ours, each in this process."""
    rows = ctx.stage.setdefault('models', {})
    p = ctx.plan
    if ctx.stage.get('stock', {}).get('status') in (None, 'running'):  # run once, kept across a restart
        if ctx.stage.get('stock', {}).get('session'):  # this process's predecessor died waiting for it
            vs_stock.stop_session(ctx.stage['stock']['session'])
        ctx.stage['stock'] = _stock_run(ctx)
        ctx.after_item('vs_stock stock', {k: v for k, v in ctx.stage['stock'].items() if k != 'models'})
    stock_rows = ctx.stage['stock'].get('models', {})

    def pair(name):
        ours = _train(ctx, 'speed', name, p['speed_iters'], skip=p['warmup'], keep_checkpoint=name in EVAL_MODELS)
        stock = stock_rows.get(name) or dict(status='skipped', reason=ctx.stock_skip_reason)
        row = dict(status=ours['status'] if stock['status'] in ('finished', 'skipped') else 'failed', ours=ours,
                   stock=stock)
        if ours.get('img_per_sec') and stock.get('img_per_sec'):
            row['ratio'] = round(ours['img_per_sec'] / stock['img_per_sec'], 2)
        return row
    _each(ctx, rows, ctx.speed_scripts, pair)
    return _verdict(rows)


def _train(ctx, stage, name, iters, skip, keep_checkpoint=False, sync_check=False, extra=()):
    p = ctx.plan
    work = ctx.work / stage / name
    shutil.rmtree(work, ignore_errors=True)
    flags = ['--data-root', _roots(ctx)[1], '--crop-size', f'{p["crop"]},{p["crop"]}', '--batch-per-gpu',
             str(p['batch']), '--max-iters', str(iters), *_script_flags(ctx, name), *extra]
    run = inprocess.train(name, flags, work, ctx.logs / f'{stage}_{name}.log', ctx.item_limit(), keep_checkpoint,
                          sync_check, key=f'gpu_check_{stage}_{name}')
    summary, losses = run['summary'], run['losses']
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    times, data_times = run['times'][skip:] or run['times'], run['data_times'][skip:] or run['data_times']
    sec = statistics.median(times) if times else None
    ok = run['exit_code'] == 0 and summary.get('status') == 'finished' and finite
    error = run.get('error') or (None if ok else 'non-finite loss' if losses else
                                 f'summary.json status: {summary.get("status", "none written")}')
    row = dict(status='finished' if ok else 'failed', error=error, iters=len(run['times']),
               loss_first=_number(losses[0]) if losses else None, loss_last=_number(losses[-1]) if losses else None,
               losses_finite=finite, sec_per_iter=round(sec, 4) if sec else None,
               img_per_sec=round(p['batch'] / sec, 2) if sec else None,
               data_time=round(statistics.median(data_times), 4) if data_times else None,
               peak_mem_mb=run['peak_mem_mb'], resident_before_mb=run['resident_before_mb'],
               precision=summary.get('precision'), speed=summary.get('speed'), startup_s=summary.get('startup_s'),
               seconds=run['seconds'], command=f'python train_{name}.py ' + ' '.join(
                   flags + ['--work-dir', str(work), '--no-resume', '--no-pretrained']),
               **{k: run[k] for k in ('log_tail', 'armed_iters', 'sync_error', 'sync_checked', 'expected_syncs')
                  if k in run})
    return row


def _stock_run(ctx):
    """The stock baseline for every speed model it is planned for, in one subprocess (vs_stock.run_stock)
    with its own log (logs/stock.log) and time limit: STOCK_SHARE of the stage's time left."""
    p = ctx.plan
    names = [n for n in ctx.speed_scripts if n in ctx.stock_scripts]
    if not names:
        return dict(status='skipped', reason=ctx.stock_skip_reason, models={})
    configs = {n: vs_stock.reference_config(f'train_{n}.py')[0] for n in names}

    def started(pid):  # saved at once: a restarted check stops it (vs_stock_speed)
        ctx.stage['stock'] = dict(status='running', session=pid)
        ctx.save()
    return vs_stock.run_stock(configs, ctx.logs / 'stock.log', max(p['min_item_s'], ctx.left() * STOCK_SHARE),
                              started, data_root=_roots(ctx)[1], iters=p['stock_iters'], batch=p['stock_batch'],
                              warmup=min(p['warmup'], p['stock_iters'] - 1), workers=p['workers'],
                              script=ctx.stock_script)


# ---------------------------------------------------------------- evaluation

def eval_precision(ctx):
    """FCN and SegFormer: one checkpoint evaluated in fp32 and in bf16 (the fast path): mIoU difference."""
    rows = ctx.stage.setdefault('models', {})
    _each(ctx, rows, EVAL_MODELS, lambda name: _compare(ctx, name, 'precision', ('fp32', 'bf16')), runs=2)
    return _verdict(rows)


def _compare(ctx, name, flag, values, tag=''):
    checkpoint, source = _weights(ctx, name)
    if checkpoint is None:
        return dict(status='failed', error=f'no checkpoint to evaluate: {source}')
    runs = {str(v): _evaluate(ctx, name, checkpoint, [cli.flag_name(flag.upper()), str(v)], f'{tag}{v}')
            for v in values}
    first, last = runs[str(values[0])], runs[str(values[-1])]
    ok = all(r['status'] == 'finished' for r in runs.values())
    row = dict(status='finished' if ok else 'failed', checkpoint=checkpoint, weights=source, runs=runs)
    if ok:
        row.update({f'{k}_diff': round(last[k] - first[k], 3) for k in ('mIoU', 'mAcc', 'aAcc')},
                   speedup=round(last['img_per_sec'] / first['img_per_sec'], 2) if first['img_per_sec'] else None)
    return row


def _weights(ctx, name):
    """The speed run's checkpoint of `name`, or one trained here (as long, from scratch)."""
    found = checkpoints.latest(ctx.work / 'speed' / name) if (ctx.work / 'speed' / name).is_dir() else None
    if found:
        return found, f'the vs_stock run ({ctx.plan["speed_iters"]} iterations from scratch)'
    if not (ctx.work / 'weights' / name).is_dir():
        run = _train(ctx, 'weights', name, ctx.plan['speed_iters'], skip=0, keep_checkpoint=True)
        if run['status'] != 'finished':
            return None, f'training it failed: {run["error"]}'
    found = checkpoints.latest(ctx.work / 'weights' / name)
    return found, f'trained here ({ctx.plan["speed_iters"]} iterations from scratch)'


def _evaluate(ctx, name, checkpoint, flags, tag):
    p = ctx.plan
    flags = ['--eval-only', checkpoint, '--data-root', _roots(ctx)[0], '--crop-size', f'{p["crop"]},{p["crop"]}',
             *_script_flags(ctx, name), *flags]
    run = inprocess.evaluate(name, flags, ctx.work / 'eval' / f'{name}_{tag}', ctx.logs / f'eval_{name}_{tag}.log',
                             ctx.item_limit())
    metrics = run['metrics']
    ok = run['exit_code'] == 0 and 'mIoU' in metrics
    seconds = metrics.get('seconds')
    return dict(status='finished' if ok else 'failed', error=None if ok else run.get('error'),
                **{k: metrics.get(k) for k in ('mIoU', 'mAcc', 'aAcc', 'images', 'precision', 'mode')},
                seconds=seconds, img_per_sec=round(metrics['images'] / seconds, 2) if ok and seconds else None,
                wall_s=run['seconds'], peak_mem_mb=run['peak_mem_mb'], command=f'python train_{name}.py ' + ' '.join(flags),
                **({'log_tail': run['log_tail']} if 'log_tail' in run else {}))


# ---------------------------------------------------------------- features on their way

def sync_free_missing(ctx):
    if importlib.util.find_spec(SYNC_FREE_MODULE) is None:
        return f'{SYNC_FREE_MODULE} (logged values kept on the GPU: no host sync per iteration) is not in this checkout'
    return None


def sync_free(ctx):
    """Training iterations that do not log run under torch.cuda.set_sync_debug_mode('error')."""
    rows = ctx.stage.setdefault('scripts', {})
    p = ctx.plan

    def check(name):
        row = _train(ctx, 'sync_free', name, p['sync_iters'], skip=1, sync_check=True,
                     extra=['--log-interval', str(p['sync_log_interval']), *SYNC_FREE_FLAGS])
        if row['status'] == 'finished' and row.get('sync_checked') and not row.get('armed_iters'):
            row.update(status='failed', error='no iteration ran under the check')
        return row
    _each(ctx, rows, ctx.sync_scripts, check)
    return _verdict(rows)


def eval_batch_missing(ctx):
    names = set(cli.COMMON_SETTINGS) | set(scripts.settings_of(vars(scripts.load(EVAL_MODELS[0]))))
    if EVAL_BATCH_SETTING not in names:
        return f'no {EVAL_BATCH_SETTING} setting (cli.COMMON_SETTINGS or the scripts): evaluation is one image a step'
    return None


def eval_batch(ctx):
    """One checkpoint evaluated one image at a time and EVAL_BATCH at a time: same mIoU, faster."""
    rows = ctx.stage.setdefault('models', {})
    _each(ctx, rows, ctx.eval_batch_models,
          lambda name: _compare(ctx, name, EVAL_BATCH_SETTING, ctx.plan['eval_batches'], tag='batch'), runs=2)
    return _verdict(rows)


# ---------------------------------------------------------------- shared

def _script_flags(ctx, name):
    """On the CPU (dry run): the scripts' own smoke-test size reductions, no loader workers."""
    if not ctx.dry:
        return []
    return [*getattr(scripts.load(name), 'SMOKE_TEST_FLAGS', []), '--num-workers', '0']


def _each(ctx, rows, names, run, runs=1):
    """rows[name] = run(name) for each name not done before a restart, while the stage's time lasts;
    saved after each. A name left 'running' by a process that died is recorded as failed."""
    for name in names:
        if rows.get(name, {}).get('status') == 'running':
            rows[name] = dict(status='failed', error='the check\'s process died during this run (see its log)')
        if name in rows:
            continue
        if ctx.left() < ctx.plan['min_item_s'] * runs:
            rows[name] = dict(status='skipped', reason=f'deadline: {ctx.left():.0f} s left of the stage\'s budget')
            continue
        rows[name] = dict(status='running')
        ctx.save()
        rows[name] = run(name)
        ctx.after_item(f'{ctx.stage_name} {name}', rows[name])


def _verdict(rows):
    counts = {s: sum(r['status'] == s for r in rows.values()) for s in ('finished', 'failed', 'skipped')}
    return dict(status='finished' if counts['finished'] == len(rows) else 'partial', **counts)


def _number(value):
    return round(value, 4) if math.isfinite(value) else str(value)
