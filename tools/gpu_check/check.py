"""The GPU check: every train script on the GPU, then the core scripts beside stock MMSegmentation, in
one call of at most 8 minutes on one H100 or H200 (`--deadline-min`: 7.5).

    bash tools/gpu_check/gpu_check.sh --out DIR    # a GPU machine with this repository's .venv: installs nothing
    bash tools/gpu_check/gpu_check.sh --prepare WHEEL_DIR   # for one without (its own torch): wheels into .gpu-wheels/
    python -m tools.gpu_check.check [--out DIR] [--deadline-min 7.5] [--only smoke,vs_stock] [--scripts fcn,...]
    python -m tools.gpu_check.check --dry-run --out /tmp/x     # the CPU: every code path but CUDA's

MEASUREMENTS, in order, each a function of tools/gpu_check/stages.py. Our scripts run in this one process
(tools/gpu_check/inprocess.py; a failure that leaves the CUDA context unusable restarts the process with
--resume, and tools/gpu_check/gpu_check.sh resumes one killed by a signal); the stock baseline never does:

  env             the stack imports, mmcv's compiled ops run on the GPU; the GPU, driver, CUDA, versions
  data            synthetic ADE20K: 32 training + 16 validation JPEGs of 683x512, labels 0..150
  smoke           every train_*.py (scripts.all_names(), so new scripts are in), those most likely to fail
                  first (stages.SMOKE_FIRST: custom mmcv ops, unusual layouts; the core six last), with
                  its defaults (the GPU fast path), 512x512, batch 2, 4 iterations from scratch: status,
                  finite losses, s/iter, img/s, peak memory (reset per script), the precision it used
  vs_stock        the six core scripts, 20 iterations, beside tools/bench/stock_mmseg_train.py (the official
                  config as the wheel's tools/train.py trains it, fp32) at the same batch 2: median s/iter
                  of the last 12. The baseline is a subprocess of its own, with its own log and time limit,
                  that imports nothing of this project, so none of this process's changes to mmengine,
                  mmseg, mmcv and torch reach it; its stock_check says what it trained with
  eval_precision  FCN and SegFormer, each one checkpoint (their vs_stock run) evaluated in fp32 and bf16
                  on the 16 validation images: the mIoU difference
  sync_free       once common/deferred.py exists: iterations that do not log run under
                  torch.cuda.set_sync_debug_mode; a sync fails the run unless it is one of the script's host
                  reads by nature (tools/gpu_check/host_reads.py: Mask2Former's and MaskFormer's matcher, STDC's
                  OHEM), which are counted by place
  eval_batch      once an EVAL_BATCH setting exists: evaluation at EVAL_BATCH 1 and 8, speed and mIoU
A feature that is absent is recorded 'not available' with the reason (stages: the *_missing probes).

Time: a deadline (--deadline-min, default 7.5) counted from the start of tools/gpu_check/gpu_check.sh (a wheels'
install included). A measurement gets its planned budget (MEASUREMENTS), less what the minimum of each
later one needs, but never less than its own minimum: the earlier, the more it matters. One that has
less than its minimum left is recorded as skipped, and so is each run of a stage its budget has no room
for. After every run, DIR/benchmarks/<gpu>/gpu_check.json and
gpu_check.md (tools/gpu_check/report.py: every figure, the commands, versions, GPU, driver) are rewritten,
gpu_check.log holds the lines printed here, and after every measurement gpu_check_logs.tar.gz holds
each run's own log. At the end it prints which scripts work on the machine (precision, img/s, peak
memory). Exit code 0 when every measurement finished (or is not available), 1 when one did not, 2 for
arguments it refuses before anything runs.

--dry-run: 64x64 crops, 8 + 2 small images, 1 iteration, FCN and SegFormer only; stock SegFormer for one
iteration at batch 1 (stock trains at its config's 512x512 crop: FCN's takes minutes on a CPU); both
precisions. What the figures say there is that the code paths work, not how fast anything is.
"""
import argparse
import collections
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

from common import files, scripts
from common.errors import SetupError, reported
from tools.bench import vs_stock
from tools.gpu_check import inprocess, report, stages

ROOT = Path(__file__).resolve().parents[2]
STATE = 'gpu_check_state.json'          # in --work: what --resume continues from
MAX_RESTARTS = 3

Measurement = collections.namedtuple('Measurement', 'name run budget_s minimum_s required missing')
# Budgets on one H100 or H200 (seconds): report.py's BUDGET_NOTE says where each number comes from.
MEASUREMENTS = [
    Measurement('env', stages.env, 30, 5, True, None),
    Measurement('data', stages.data, 20, 5, True, None),
    Measurement('smoke', stages.smoke, 290, 30, False, None),
    Measurement('vs_stock', stages.vs_stock_speed, 100, 30, False, None),
    Measurement('eval_precision', stages.eval_precision, 30, 15, False, None),
    Measurement('sync_free', stages.sync_free, 40, 15, False, stages.sync_free_missing),
    Measurement('eval_batch', stages.eval_batch, 30, 10, False, stages.eval_batch_missing),
]
GPU_PLAN = dict(crop=512, batch=2, stock_batch=2, image_size=(683, 512), train_images=32, val_images=16,
                smoke_iters=4, speed_iters=20, stock_iters=20, warmup=8, sync_iters=12, sync_log_interval=5, eval_batches=(1, 8),
                workers=None, item_cap_s=60, min_item_s=5, deadline_min=7.5, budget_scale=1)
DRY_PLAN = dict(crop=64, batch=2, stock_batch=1, image_size=(96, 72), train_images=8, val_images=2,
                smoke_iters=1, speed_iters=1, stock_iters=1, warmup=0, sync_iters=4, sync_log_interval=2, eval_batches=(1, 2),
                workers=0, item_cap_s=300, min_item_s=1, deadline_min=20, budget_scale=4)  # a shared CPU
DRY_SCRIPTS, DRY_STOCK = ('fcn', 'segformer'), ('segformer',)
# The smoke stage's plan (BUDGET_NOTE): each script's set-up as the dry run measured it on a CPU (work
# a GPU run does on the host too: SMOKE_MEASURED), plus this for its part on the GPU: the model moved
# there, its loader workers started, 4 iterations at 512x512 (stock takes 0.04-0.34 s an iteration at
# batch 2 on an H100; ours is faster) and cuDNN's tuning of the shapes this process has not seen yet.
SMOKE_GPU_S = 2.5
SMOKE_MEASURED = ROOT / 'benchmarks' / 'gpu_check_cpu' / 'smoke.json'


class Restart(Exception):
    """The CUDA context is unusable after a failure: continue in a fresh process (--resume)."""


class Context:
    """What the measurements share: the plan, the folders, the results so far and the time left."""

    def __init__(self, args, results):
        self.dry, self.results, self.work, self.out = args.dry_run, results, args.work, args.out
        self.plan = dict(DRY_PLAN if args.dry_run else GPU_PLAN)
        self.plan.update({k: v for k, v in (('smoke_iters', args.smoke_iters), ('speed_iters', args.speed_iters),
                                            ('stock_iters', args.speed_iters)) if v})
        self.logs = self.work / 'logs'
        chosen = args.scripts.split(',') if args.scripts else DRY_SCRIPTS if self.dry else scripts.all_names()
        self.scripts = stages.smoke_order(chosen)
        self.speed_scripts = args.speed_scripts.split(',') if args.speed_scripts else list(
            DRY_SCRIPTS if self.dry else vs_stock.CORE)
        self.sync_scripts = ['segformer'] if self.dry else ['fcn', 'segformer', 'mask2former']
        self.eval_batch_models = ['segformer'] if self.dry else list(stages.EVAL_MODELS)
        self.stock_scripts = DRY_STOCK if self.dry else self.speed_scripts
        self.stock_skip_reason = 'dry run: stock trains at its config\'s 512x512 crop, too slow on a CPU for this model'
        self.stock_script = args.stock_script
        self.deadline = results['started_at'] + 60 * results['deadline_min']
        self.stage, self.stage_name, self.stage_deadline = None, None, self.deadline

    def left(self):
        return min(self.stage_deadline, self.deadline) - time.time()

    def item_limit(self):
        return max(1.0, min(self.plan['item_cap_s'], self.left()))

    def echo(self, line):
        line = f'[gpu_check {time.time() - self.results["started_at"]:5.0f} s] {line}'
        print(line, flush=True)
        self.results.setdefault('console', []).append(line)

    def out_dir(self):
        slug = self.results.get('gpu', {}).get('slug')
        return self.out / 'benchmarks' / slug if slug else None

    def save(self, logs=False):
        self.results['elapsed_s'] = round(time.time() - self.results['started_at'], 1)
        text = json.dumps(self.results, indent=1, default=str) + '\n'
        files.atomic_write(text, str(self.work / STATE))
        out = self.out_dir()
        if out is None:
            return
        files.atomic_write(text, str(out / 'gpu_check.json'))
        files.atomic_write(report.markdown(self.results), str(out / 'gpu_check.md'))
        files.atomic_write('\n'.join(self.results['console']) + '\n', str(out / 'gpu_check.log'))
        if logs and self.logs.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
                tar.add(self.logs, arcname='logs')
            files.atomic_write(buffer.getvalue(), str(out / 'gpu_check_logs.tar.gz'))

    def after_item(self, label, row):
        self.echo(f'{label}: {report.brief(row)}')
        self.save()
        if row.get('status') == 'failed' and not inprocess.cuda_ok():
            raise Restart(f'CUDA is unusable after {label}')


def run(measurements, ctx, only=None):
    """Each measurement in order within its budget (module docstring); results saved after each."""
    done = ctx.results['stages']
    scale = getattr(ctx, 'plan', {}).get('budget_scale', 1)
    measurements = [m._replace(budget_s=m.budget_s * scale, minimum_s=m.minimum_s * scale) for m in measurements]
    missing = {m.name: _absent(m, ctx, only) for m in measurements}  # (status, reason) or None
    for i, m in enumerate(measurements):
        if done.get(m.name, {}).get('status', 'running') != 'running':
            continue  # finished before a restart
        if missing[m.name]:
            done[m.name] = dict(zip(('status', 'reason'), missing[m.name]))
            ctx.echo(f'{m.name}: {report.brief(done[m.name])}')
            ctx.save()
            continue
        blocked = [x.name for x in measurements[:i] if x.required and done.get(x.name, {}).get('status') != 'finished']
        kept = sum(x.minimum_s for x in measurements[i + 1:] if not missing[x.name] and x.name not in done)
        left = ctx.deadline - time.time()
        budget = min(left, max(m.minimum_s, min(m.budget_s, left - kept)))
        if blocked or left < m.minimum_s:
            reason = (f'{", ".join(blocked)} did not finish' if blocked else
                      f'deadline: {left:.0f} s left; it needs at least {m.minimum_s} s')
            done[m.name] = dict(status='skipped', reason=reason)
            ctx.echo(f'{m.name}: skipped ({reason})')
            ctx.save()
            continue
        stage = done.setdefault(m.name, {})
        stage.update(status='running', budget_s=round(budget))
        ctx.stage, ctx.stage_name, ctx.stage_deadline = stage, m.name, time.time() + budget
        ctx.echo(f'{m.name}: {budget:.0f} s budget, {left:.0f} s to the deadline')
        start = time.time()
        try:
            stage.update(m.run(ctx))
        except Exception as exc:
            if isinstance(exc, Restart):
                raise
            stage.update(status='failed', error=f'{type(exc).__name__}: {exc}',
                         traceback=traceback.format_exc().splitlines()[-12:])
        finally:
            stage['seconds'] = round(stage.get('seconds', 0) + time.time() - start, 1)
            ctx.save(logs=True)
        ctx.echo(f'{m.name}: {report.brief(stage)} in {stage["seconds"]} s')
    return all(done[m.name]['status'] in ('finished', 'not available') for m in measurements if m.name in done)


def _absent(m, ctx, only):
    """('skipped' or 'not available', why) for a measurement that will not run; None for one that will."""
    if only and not m.required and m.name not in only:
        return 'skipped', f'not asked for (--only {",".join(only)})'
    try:
        reason = m.missing(ctx) if m.missing else None
    except Exception as exc:
        reason = f'its probe failed: {type(exc).__name__}: {exc}'
    return ('not available', reason) if reason else None


def _commit():
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return head.stdout.strip() + (' (with uncommitted changes)' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        pass
    noted = ROOT / '.gpu-wheels' / 'COMMIT'  # written by tools/gpu_check/gpu_check.sh --prepare
    return noted.read_text().strip() + ' (noted by --prepare)' if noted.is_file() else None


def _checked(args):
    """The arguments a user can get wrong, refused before anything runs (SetupError, exit code 2)."""
    if not args.stock_script.is_file():
        raise SetupError(f'the stock baseline {args.stock_script} does not exist',
                         'leave --stock-script out for tools/bench/stock_mmseg_train.py, or name an existing file')
    known = scripts.all_names()
    for flag, value in (('--scripts', args.scripts), ('--speed-scripts', args.speed_scripts)):
        unknown = [n for n in (value or '').split(',') if n and n not in known]
        if unknown:
            raise SetupError(f'{flag} {value}: no train_{unknown[0]}.py in this repository',
                             f'name models of train_<model>.py, comma separated: {", ".join(known)}')
    only = [n for n in (args.only or '').split(',') if n and n not in [m.name for m in MEASUREMENTS]]
    if only:
        raise SetupError(f'--only {args.only}: there is no measurement {only[0]}',
                         f'name some of {", ".join(m.name for m in MEASUREMENTS)}')


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', type=Path, default=ROOT, help='writes OUT/benchmarks/<gpu>/gpu_check.{json,md} (default: '
                   'the repository)')
    p.add_argument('--work', type=Path, default=ROOT / 'work_dirs' / 'gpu_check', help='data, runs and logs')
    p.add_argument('--deadline-min', type=float, help='minutes of wall time in all (default 9; dry run 20)')
    p.add_argument('--dry-run', action='store_true', help='tiny sizes on the CPU (module docstring)')
    p.add_argument('--only', help='measurements to run, comma separated (env and data always run)')
    p.add_argument('--scripts', help='smoke only these models (default: every train_*.py)')
    p.add_argument('--speed-scripts', help=f'vs_stock models (default: {",".join(vs_stock.CORE)})')
    p.add_argument('--smoke-iters', type=int, help='iterations of each smoke run (default 4)')
    p.add_argument('--speed-iters', type=int, help='iterations of each vs_stock run, ours and stock (default 30)')
    p.add_argument('--stock-script', type=Path, default=vs_stock.STOCK_SCRIPT,
                   help='the stock baseline, run in a process of its own (default: tools/bench/stock_mmseg_train.py)')
    p.add_argument('--resume', action='store_true', help='continue the run recorded in --work')
    p.add_argument('--started-at', type=float, help='when the check began (epoch s; gpu_check.sh sets it)')
    args = p.parse_args(argv)
    args.out, args.work, args.stock_script = args.out.resolve(), args.work.resolve(), args.stock_script.resolve()
    with reported():
        _checked(args)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    state = args.work / STATE
    if args.resume and state.is_file():
        results = json.loads(state.read_text())
        results['resumes'] = results.get('resumes', 0) + 1
    else:
        for old in (args.work / 'logs').glob('*.log'):
            old.unlink()
        shown = [a for i, a in enumerate(argv) if a != '--resume' and not a.startswith('--started-at')
                 and (i == 0 or argv[i - 1] != '--started-at')]
        results = dict(schema=1, command=os.environ.get('GPU_CHECK_COMMAND') or
                       ' '.join(['python -m tools.gpu_check.check', *shown]), dry_run=args.dry_run, commit=_commit(),
                       started_at=args.started_at or time.time(), started_utc=None, resumes=0,
                       install_s=float(os.environ['GPU_CHECK_INSTALL_S']) if os.environ.get('GPU_CHECK_INSTALL_S') else None,
                       stock_script=vs_stock.relative(args.stock_script), stages={})
        results['started_utc'] = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(results['started_at']))
        results['deadline_min'] = args.deadline_min or (DRY_PLAN if args.dry_run else GPU_PLAN)['deadline_min']
    ctx = Context(args, results)
    results.update(plan=ctx.plan, scripts=ctx.scripts, speed_scripts=ctx.speed_scripts,
                   budgets={m.name: dict(planned_s=m.budget_s * ctx.plan['budget_scale'],
                                         minimum_s=m.minimum_s * ctx.plan['budget_scale']) for m in MEASUREMENTS})
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        ok = run(MEASUREMENTS, ctx, args.only.split(',') if args.only else None)
    except Restart as why:
        results['restarts'] = results.get('restarts', 0) + 1
        ctx.echo(f'{why}: restarting ({results["restarts"]} of {MAX_RESTARTS})')
        ctx.save(logs=True)
        if results['restarts'] > MAX_RESTARTS:
            return 1
        sys.stdout.flush()
        forwarded = [a for a in argv if a != '--resume']
        if args.started_at is None:
            forwarded += ['--started-at', str(results['started_at'])]
        os.execv(sys.executable, [sys.executable, '-m', 'tools.gpu_check.check', *forwarded, '--resume'])
    results['finished'] = True
    ctx.save(logs=True)
    print('\n' + report.works_table(results), flush=True)
    if ctx.out_dir():
        ctx.echo(f'wrote {ctx.out_dir()}/gpu_check.json, gpu_check.md, gpu_check.log, gpu_check_logs.tar.gz')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
