"""A train script run inside this process (the GPU check's way of running our scripts).

`train(name, flags, work_dir, log, limit_s)` calls train_<name>.py's own main() in this process, so the
imports, the CUDA context and cuDNN's autotuning cache are paid once for all scripts. The script's
config changes only where the check measures nothing (`adjust`): no evaluation during or at the end of
training (val_begin past the end), a checkpoint only where asked, a unique experiment name (mmengine
keys its per-run logger and message hub by name and second), and a probe hook that copies each
iteration's loss and time out of the message hub once, when training ends, so the run waits for
nothing more than it would. With `sync_check`, iterations that neither log nor save nor are the first
or the last run under torch.cuda.set_sync_debug_mode (host_reads.py: Syncs.armed): a sync
fails the run, and the traceback's end says where, unless it is one of the script's host reads by
nature (a matcher's, OHEM's), which are counted by place instead (`expected_syncs`).
`evaluate(...)` runs a script's --eval-only. Each returns a dict: exit code, the error line, seconds,
peak GPU memory (reset before the run) and what the run wrote. All output of a run goes to its log
file; one that overruns `limit_s` is stopped by SIGALRM (Overtime).
`cuda_ok()` says whether a failure left the CUDA context usable (an illegal memory access does not).
The stock baseline never runs here: it gets a process of its own (tools/bench/vs_stock.py: run_stock), so
that none of this project's changes to mmengine, mmcv, mmseg and torch reach it.
"""
import contextlib
import gc
import json
import signal
import time
import traceback
from pathlib import Path

from common import scripts
from tools.bench import bench
from tools.gpu_check import host_reads

RECORDS = {}      # probe key -> what the probe hook saw in that run
# When each run began. mmengine names a Runner's logger, message hub and scope by its experiment name
# and start second: a training run here has a name of its own (adjust), but two evaluations of one
# script would share theirs and must not start in the same second.
_starts = []
NEVER = 10 ** 9   # an iteration no run reaches


class Overtime(BaseException):
    """A run went past its time limit (a BaseException: the scripts' `except Exception` lets it through)."""


@contextlib.contextmanager
def time_limit(seconds):
    def expire(signum, frame):
        raise Overtime(f'stopped after its limit of {seconds:.0f} s')
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _overtime_within(exc):
    """The Overtime an exception was raised while handling, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Overtime):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def cuda_ok():
    """True when CUDA still computes (or there is none): after a failure, can the next run use it?"""
    import torch
    if not torch.cuda.is_available():
        return True
    try:
        torch.cuda.synchronize()
        return (torch.ones(2, device='cuda') * 2).sum().item() == 4
    except Exception:
        return False


# ---------------------------------------------------------------- the probe hook

def _register_probe():
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
    if 'GpuCheckProbe' in HOOKS.module_dict:
        return

    @HOOKS.register_module()
    class GpuCheckProbe(Hook):
        """Copies the run's per-iteration loss, time and data time out of the message hub at its end."""
        priority = 'LOWEST'

        def __init__(self, key, sync_check=False, script=None):
            self.key, self.sync_check, self.script = key, sync_check, script

        def before_train(self, runner):
            record = RECORDS.setdefault(self.key, {})
            record['start_iter'] = runner.iter
            if self.sync_check:
                _check_syncs(runner, record, self.script)

        def after_train(self, runner):
            record = RECORDS[self.key]
            count = runner.iter - record['start_iter']
            for name, key in (('losses', 'train/loss'), ('times', 'train/time'), ('data_times', 'train/data_time')):
                try:
                    values = runner.message_hub.get_scalar(key).data[0]
                except KeyError:
                    values = []
                record[name] = [float(v) for v in values[len(values) - count:]] if count else []


def _check_syncs(runner, record, script):
    """Wrap the loop's run_iter (the hooks before, the step, the hooks after): iterations that do not
    log or save, and are neither the first (cuDNN autotuning, lazy set-up) nor the last, run under
    host_reads.Syncs(script).armed(): a sync fails the run unless it is a read by the script's nature."""
    import torch
    loop = runner.train_loop
    intervals = [h.interval for h in runner.hooks if type(h).__name__ in ('LoggerHook', 'CheckpointHook')]
    run_iter = loop.run_iter
    syncs = host_reads.Syncs(script)
    record.update(armed_iters=0, sync_error=None, sync_checked=torch.cuda.is_available(),
                  expected_syncs=syncs.expected)

    def checked(data_batch):
        i = loop.iter
        if not (record['sync_checked'] and 0 < i < loop.max_iters - 1 and all((i + 1) % n for n in intervals)):
            return run_iter(data_batch)
        try:
            with syncs.armed():
                result = run_iter(data_batch)
        except RuntimeError as exc:
            record['sync_error'] = ''.join(traceback.format_exception(exc)[-8:]).strip()
            raise
        record['armed_iters'] += 1
        return result
    loop.run_iter = checked


def adjust(cfg, key, keep_checkpoint=False, sync_check=False, script=None):
    """The check's changes to a script's config: nothing it measures (see the module docstring)."""
    cfg['experiment_name'] = key
    cfg['train_cfg']['val_begin'] = NEVER
    cfg['default_hooks']['checkpoint'].update(interval=NEVER, save_last=keep_checkpoint)
    probe = dict(type='GpuCheckProbe', key=key, sync_check=sync_check, script=script)
    cfg['custom_hooks'] = [*cfg.get('custom_hooks', []), probe]
    return cfg


# ---------------------------------------------------------------- one run

def _call(main, argv, log_path, limit_s, own_name=False):
    """main(argv) with its output in log_path, under a time limit; what happened, as a dict. A run
    without a name of its own (`own_name`) waits for a second no earlier run started in."""
    import torch
    cuda = torch.cuda.is_available()
    if not own_name and _starts and int(time.time()) == int(_starts[-1]):
        time.sleep(1 - time.time() % 1)
    _starts.append(time.time())
    gc.collect()
    before = 0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    code, error, overtime, start = 0, None, None, time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'w', buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(' '.join(map(str, argv)), flush=True)
        try:
            with time_limit(limit_s):
                main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            overtime = _overtime_within(exc)
        except Overtime as exc:
            overtime = exc
        except Exception as exc:
            traceback.print_exc()
            code, error = 1, f'{type(exc).__name__}: {exc}'
            overtime = _overtime_within(exc)
    if overtime:  # also when a bare `except:` (mmengine's config formatting) made it another error
        code, error = 124, str(overtime)
    result = dict(exit_code=code, seconds=round(time.perf_counter() - start, 2),
                  peak_mem_mb=round(torch.cuda.max_memory_allocated() / 2 ** 20) if cuda else None,
                  resident_before_mb=round(before / 2 ** 20) if cuda else None)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if code or error:
        text = Path(log_path).read_text(errors='replace')
        result['error'] = error or bench.error_from_stderr(text) or f'exit code {code}'
        result['log_tail'] = bench.tail(log_path, 12)
    return result


def train(name, flags, work_dir, log_path, limit_s, keep_checkpoint=False, sync_check=False, key=None):
    """Train train_<name>.py with `flags` in this process (see the module docstring)."""
    _register_probe()
    module = scripts.load(name)
    key = key or f'gpu_check_{name}'
    build = module.build_config
    module.build_config = lambda s: adjust(build(s), key, keep_checkpoint, sync_check, name)
    # --verbose: the check's log keeps mmengine's whole output (environment, hooks, every line) beside the console's
    argv = [*flags, '--work-dir', str(work_dir), '--no-resume', '--no-pretrained', '--verbose']
    result = _call(module.main, argv, log_path, limit_s, own_name=True)
    record = RECORDS.pop(key, {})
    summary = _read_json(Path(work_dir) / 'summary.json')
    result.update(summary=summary, losses=record.get('losses', []), times=record.get('times', []),
                  data_times=record.get('data_times', []))
    for name_ in ('armed_iters', 'sync_error', 'sync_checked', 'expected_syncs'):
        if name_ in record:
            result[name_] = record[name_]
    return result


def evaluate(name, flags, out_dir, log_path, limit_s):
    """train_<name>.py --eval-only with `flags` (they name the checkpoint); its metrics.json as `metrics`."""
    module = scripts.load(name)
    result = _call(module.main, [*flags, '--out', str(out_dir), '--no-pretrained'], log_path, limit_s)
    result['metrics'] = _read_json(Path(out_dir) / 'metrics.json')
    return result


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}

