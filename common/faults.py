"""Test-only fault injection: ADE_TRAIN_FAULT makes a run fail at an exact point, so the tests can
prove with real processes that nothing is lost (tests/test_resilience.py). Never set it otherwise.

    ADE_TRAIN_FAULT=sigkill@iter=3      SIGKILL after the 3rd training iteration's hooks
    ADE_TRAIN_FAULT=sigkill@val=5       SIGKILL after the 5th validation iteration (counted over the run)
    ADE_TRAIN_FAULT=sigkill@save=2      SIGKILL halfway through writing the 2nd file (common/files.py)
    ADE_TRAIN_FAULT=enospc@save=2       "No space left on device" halfway through the 2nd file
    ADE_TRAIN_FAULT=nan@iter=3          every loss term of the 3rd iteration becomes NaN
    ADE_TRAIN_FAULT=overflow@iter=1     the 1st iteration's gradients overflow (inf) while its loss stays
                                        finite: what too high an fp16 loss scale does
    ADE_TRAIN_FAULT=sigterm@iter=3      SIGTERM (pre-emption) after the 3rd iteration
    ADE_TRAIN_FAULT=oom@iter=3          from the 3rd training iteration on, a forward/backward pass of more
                                        than 1 image per GPU runs out of memory (torch.OutOfMemoryError)
    ADE_TRAIN_FAULT=oom_any@iter=3      from the 3rd iteration on, every pass does: nothing fits
    ADE_TRAIN_FAULT=pause@val=2         after the 2nd validation iteration, write the file named by
                                        ADE_TRAIN_FAULT_MARK (+ '.<rank>') and wait (up to 120 s) until
                                        a signal arrives: the tests signal the process group from outside
                                        at a known point

Several are comma-separated; ADE_TRAIN_FAULT_RANK=1 limits them to that rank of a DDP run.
"""
import contextlib
import os
import signal
import time


def _parse(env=os.environ):
    only_rank = env.get('ADE_TRAIN_FAULT_RANK')  # e.g. '1': one rank of a DDP run dies
    if only_rank is not None and env.get('RANK', '0') != only_rank:
        return {}
    faults = {}
    for item in filter(None, (part.strip() for part in env.get('ADE_TRAIN_FAULT', '').split(','))):
        kind, _, where = item.partition('@')
        point, _, count = where.partition('=')
        faults[(kind, point)] = int(count or 1)
    return faults


FAULTS = _parse()
_counters = {}


def due(kind, point):
    """True once, when `point` is reached for the configured n-th time under fault `kind`."""
    target = FAULTS.get((kind, point))
    if target is None:
        return False
    _counters[(kind, point)] = _counters.get((kind, point), 0) + 1
    return _counters[(kind, point)] == target


def maybe_signal(point, until=None):
    """Kill, signal or pause this process if a fault is configured for this point; a pause ends when
    `until()` is true (a signal arrived)."""
    if not FAULTS:
        return
    if due('sigkill', point):
        os.kill(os.getpid(), signal.SIGKILL)
    if due('sigterm', point):
        os.kill(os.getpid(), signal.SIGTERM)
    if due('pause', point):
        mark = f"{os.environ['ADE_TRAIN_FAULT_MARK']}.{os.environ.get('RANK', '0')}"
        with open(mark, 'w') as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not (until and until()) and time.monotonic() < deadline:
            time.sleep(0.05)


def maybe_out_of_memory(iteration, images):
    """`oom@iter=N` / `oom_any@iter=N`: torch's out-of-memory error for a training pass of `images`
    images per GPU at iteration `iteration` (1-based), as the GPU's allocator raises it."""
    if not FAULTS:
        return
    at = FAULTS.get(('oom', 'iter'))
    if (at is not None and iteration >= at and images > 1) or iteration >= FAULTS.get(('oom_any', 'iter'), float('inf')):
        import torch
        raise torch.OutOfMemoryError(f'CUDA out of memory. Tried to allocate 2.00 GiB (injected: ADE_TRAIN_FAULT, '
                                     f'{images} image(s))')


@contextlib.contextmanager
def loss_faults():
    """`nan@iter=N`: every loss term of the N-th iteration becomes NaN, as in a real divergence;
    `overflow@iter=N`: the gradient flowing back from the N-th iteration's loss becomes inf. In
    mmengine's BaseModel.parse_losses for the duration of a run only."""
    if ('nan', 'iter') not in FAULTS and ('overflow', 'iter') not in FAULTS:
        yield
        return
    from mmengine.model import BaseModel
    stock = BaseModel.parse_losses

    def parse_losses(self, losses):
        if due('nan', 'iter'):
            losses = {k: v * float('nan') if 'loss' in k else v for k, v in losses.items()}
        loss, log_vars = stock(self, losses)
        if due('overflow', 'iter') and loss.requires_grad:
            loss.register_hook(lambda grad: grad * float('inf'))
        return loss, log_vars
    BaseModel.parse_losses = parse_losses
    try:
        yield
    finally:
        BaseModel.parse_losses = stock
