"""What keeps a long run safe: atomic checkpoint writes, pre-emption, divergence, fault injection.

- Every file mmengine writes locally (checkpoints, the `last_checkpoint` pointer) goes to a
  temporary file in the same folder, is flushed to disk, then renamed: a reader sees the old file
  or the new one, never half of one. A full disk fails the write and leaves the previous checkpoint.
- SIGTERM or SIGINT (a scheduler's pre-emption, Ctrl-C) sets a flag; after the current iteration
  a checkpoint is saved and the run stops with exit code 128 + signal; the same command resumes.
- A non-finite loss skips the optimizer step (weights stay finite) and, by default, stops the run
  naming the iteration and each loss term; the last good checkpoint stays as it was.
- ADE_TRAIN_FAULT injects faults at exact points so tests can prove the above with real processes:
  `sigkill@iter=3`, `sigkill@val=1`, `sigkill@save=2` (halfway through writing the 2nd checkpoint),
  `enospc@save=2`, `nan@iter=3`, `sigterm@iter=3` (comma-separated); ADE_TRAIN_FAULT_RANK=1 limits
  them to that rank. Never set them otherwise.
"""
import errno
import math
import os
import signal
import tempfile

import torch

from common.errors import SetupError

EXIT_DIVERGED = 3


# ---------------------------------------------------------------- fault injection (tests only)

def _faults():
    only_rank = os.environ.get('ADE_TRAIN_FAULT_RANK')  # e.g. '1': one rank of a DDP run dies
    if only_rank is not None and os.environ.get('RANK', '0') != only_rank:
        return {}
    spec = os.environ.get('ADE_TRAIN_FAULT', '')
    faults = {}
    for item in filter(None, (part.strip() for part in spec.split(','))):
        kind, _, where = item.partition('@')
        point, _, count = where.partition('=')
        faults[(kind, point)] = int(count or 1)
    return faults


FAULTS = _faults()
_counters = {}


def fault_due(kind, point):
    """True once, when `point` is reached for the configured n-th time under fault `kind`."""
    target = FAULTS.get((kind, point))
    if target is None:
        return False
    _counters[(kind, point)] = _counters.get((kind, point), 0) + 1
    return _counters[(kind, point)] == target


def maybe_fault(point):
    """Kill or signal this process if a fault is configured for this point."""
    if fault_due('sigkill', point):
        os.kill(os.getpid(), signal.SIGKILL)
    if fault_due('sigterm', point):
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------- atomic writes

def atomic_write(data, path):
    """Write bytes to `path` through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            half = len(data) // 2
            f.write(data[:half])
            if fault_due('enospc', 'save'):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            if fault_due('sigkill', 'save'):
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def install_atomic_writes():
    """Route mmengine's local file writes (checkpoints) through atomic_write. The `last_checkpoint`
    pointer is written with plain open() by CheckpointHook; resume does not trust it blindly
    (see runtime.latest_checkpoint)."""
    from mmengine.fileio.backends.local_backend import LocalBackend

    def put(self, obj, filepath):
        atomic_write(obj, str(filepath))

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write(obj.encode(encoding), str(filepath))

    LocalBackend.put, LocalBackend.put_text = put, put_text


def remove_stale_temporaries(work_dir):
    """Temporary files of writes that a killed run left behind."""
    if os.path.isdir(work_dir):
        for name in os.listdir(work_dir):
            if name.startswith('.') and name.endswith('.tmp'):
                os.unlink(os.path.join(work_dir, name))


def disk_full_error(exc, work_dir, previous):
    return SetupError(
        f'could not write a checkpoint in {work_dir}: {exc.strerror or exc}. '
        f'The previous checkpoint {previous or "(none yet)"} is complete and was not touched.',
        'free disk space (or set --work-dir elsewhere) and rerun the same command: it resumes from it')


# ---------------------------------------------------------------- pre-emption

class Preempted(Exception):
    def __init__(self, signum, iteration, checkpoint):
        super().__init__(f'stopped by {signal.Signals(signum).name} at iteration {iteration}')
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


class Diverged(Exception):
    pass


_signal_received = []


def install_signal_handlers():
    def handler(signum, frame):
        if _signal_received:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        _signal_received.append(signum)
        print(f'\n[signal] {signal.Signals(signum).name}: saving a checkpoint after this iteration, then '
              'stopping (send it again to stop at once)', flush=True)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _any_rank(flag):
    """True if `flag` is true on any rank (all ranks must stop at the same iteration)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        value = torch.tensor([1.0 if flag else 0.0])
        if dist.get_backend() == 'nccl':
            value = value.cuda()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
    return flag


# ---------------------------------------------------------------- divergence

class _LossGuard:
    """Wraps OptimWrapper.update_params: a non-finite loss (on any rank) skips backward and step."""
    skipped_at = None

    @classmethod
    def install(cls):
        from mmengine.optim import OptimWrapper
        if getattr(OptimWrapper.update_params, '_guarded', False):
            return
        original = OptimWrapper.update_params

        def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
            if _any_rank(not bool(torch.isfinite(loss.detach()).all())):
                cls.skipped_at = True
                self._inner_count += 1  # keep gradient-accumulation counting in step
                self.zero_grad(**(zero_kwargs or {}))
                return
            cls.skipped_at = None
            return original(self, loss, step_kwargs, zero_kwargs)

        update_params._guarded = True
        OptimWrapper.update_params = update_params
        if ('nan', 'iter') in FAULTS:
            cls._inject_nan()

    @staticmethod
    def _inject_nan():
        """Test fault: every loss term of the n-th iteration becomes NaN, as in a real divergence."""
        from mmengine.model import BaseModel
        original = BaseModel.parse_losses

        def parse_losses(self, losses):
            if fault_due('nan', 'iter'):
                losses = {k: v * float('nan') if 'loss' in k else v for k, v in losses.items()}
            return original(self, losses)
        BaseModel.parse_losses = parse_losses


def make_guard_hook(on_nonfinite='stop'):
    """The hook that turns a skipped step into a stop (default) or a counted skip, and that
    handles pre-emption and injected kills between iterations and inside evaluation."""
    from mmengine.hooks import Hook
    from mmengine.logging import print_log

    class SafetyHook(Hook):
        priority = 'VERY_LOW'  # after the CheckpointHook of the same iteration

        def __init__(self):
            self.skipped = 0

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            done = runner.iter + 1  # mmengine counts the iteration as done only after its hooks
            if _LossGuard.skipped_at:
                terms = ', '.join(f'{k}={float(v):.4g}' for k, v in (outputs or {}).items()
                                  if 'loss' in k) or 'no loss terms logged'
                self.skipped += 1
                message = f'non-finite loss at iteration {done} ({terms})'
                if on_nonfinite == 'stop':
                    raise Diverged(message + '; the optimizer step was skipped, the last checkpoint is untouched')
                print_log(f'[guard] {message}: step skipped ({self.skipped} so far)', logger='current',
                          level=30)
                runner.message_hub.update_scalar('train/skipped_steps', self.skipped)
            maybe_fault('iter') if FAULTS else None
            if _any_rank(bool(_signal_received)):
                checkpoint = save_now(runner, done)
                raise Preempted(_signal_received[0] if _signal_received else signal.SIGTERM, done, checkpoint)

        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            maybe_fault('val') if FAULTS else None

    _LossGuard.install()
    return SafetyHook()


def save_now(runner, done):
    """A checkpoint after `done` iterations, recorded like the periodic ones (so the rotation of the
    last N removes it in time), and the pointer to it. Every rank waits until it is written, so no
    rank exits (and makes torchrun stop the others) while rank 0 is still writing."""
    import torch.distributed as dist
    name = f'iter_{done}.pth'
    path = os.path.join(runner.work_dir, name)
    keep = list(runner.message_hub.get_info('keep_ckpt_ids', []))
    if done not in keep:
        keep.append(done)
        runner.message_hub.update_info('keep_ckpt_ids', keep)
    if not os.path.isfile(path):  # the periodic hook may have just written this iteration
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False)  # meta iter = done, as the hook's
    if runner.rank == 0:
        atomic_write(path.encode(), os.path.join(runner.work_dir, 'last_checkpoint'))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return path


def is_disk_full(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def finite(value):
    return value is not None and math.isfinite(value)
