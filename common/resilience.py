"""What stops a long run cleanly: pre-emption signals and a non-finite loss.

- SIGTERM, SIGINT or SIGUSR1 (a scheduler's pre-emption or time limit, Ctrl-C, SLURM's --signal)
  sets a flag; after the current iteration, or the current evaluation step, a checkpoint is saved
  and the run stops with exit code 128 + signal; the same command resumes, and redoes an evaluation
  that a signal or a kill cut short (WORK_DIR/eval_interrupted names the iteration while one runs).
  Clusters signal every process of the job: the dataloader workers ignore these signals (the main
  process stops them, also at exit), and the copy torchrun forwards to its ranks within COALESCE_S of
  the first is the same signal. A second signal after that stops at once.
- A non-finite loss skips the optimizer step (weights stay finite) and, by default, stops the run
  naming the iteration and each loss term; the last good checkpoint stays as it was.
(Checkpoints themselves are written atomically: common/checkpoints.py. Test faults: common/faults.py.)
"""
import atexit
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import FUNCTIONS, OPTIM_WRAPPERS

from common import checkpoints, console, deferred, dist, faults, files

EXIT_DIVERGED = 3


class Preempted(Exception):
    def __init__(self, signum, iteration, checkpoint):
        super().__init__(f'stopped by {signal.Signals(signum).name} at iteration {iteration}')
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


class Diverged(Exception):
    pass


SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# `kill -TERM -PGID`, `timeout`, srun: each rank is signalled, and torchrun forwards its own copy
# a moment later. Copies within this many seconds of the first are the same request.
COALESCE_S = 2.0
EVAL_INTERRUPTED = 'eval_interrupted'  # in WORK_DIR: the iteration being evaluated (left behind: cut short)
_signal_received = []
_first_signal_at = [0.0]


def install_signal_handlers():
    main_pid = os.getpid()
    _signal_received.clear()  # a new run (the tests run many in one process)

    def handler(signum, frame):
        if os.getpid() != main_pid:  # a process forked after install (workers set SIG_IGN first)
            return
        if _signal_received:
            if time.monotonic() - _first_signal_at[0] < COALESCE_S:
                return
            raise KeyboardInterrupt  # a second request: stop now
        _signal_received.append(signum)
        _first_signal_at[0] = time.monotonic()
        print(f'\n[signal] {signal.Signals(signum).name}: saving a checkpoint after this step, then '
              'stopping (send it again to stop at once)', flush=True)
    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    if not _exit_hook_registered:
        atexit.register(end_dataloader_workers)  # runs before multiprocessing's own (atexit is LIFO)
        _exit_hook_registered.append(True)
    return previous


@contextlib.contextmanager
def signal_handlers():
    """The stop signals' handlers for the duration of a run; the process's own again after it."""
    previous = install_signal_handlers()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


_exit_hook_registered = []


def end_dataloader_workers():
    """Stop every live dataloader's workers as torch does at the end of an epoch (None on each index
    queue, then join). At exit, multiprocessing would SIGTERM its daemonic children, which our
    workers ignore (worker_init), and then wait for them forever: a run stopped by a signal keeps
    its loaders' iterators alive in the traceback, so nothing else ends them. A worker still alive
    after that (stuck in a read) is killed: it holds nothing that needs saving."""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
    for obj in gc.get_objects():
        if type(obj) is _MultiProcessingDataLoaderIter:  # type(): isinstance would touch deprecated objects
            obj._shutdown_workers()
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(5)


def worker_init(worker_id, num_workers=None, rank=0, seed=None):
    """A dataloader worker's start: ignore the stop signals, which reach it too when a whole process
    group is signalled (torch's own SIGTERM handler would kill it and fail the main process before
    it saves); the main process ends its workers. Then mmengine's per-worker seeding, as by default."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if seed is not None:
        from mmengine.dataset import worker_init_fn
        worker_init_fn(worker_id, num_workers, rank, seed)


FUNCTIONS.register_module(name='ade20k_worker_init', module=worker_init, force=True)


def survive_group_signals(cfg, rank):
    """Dataloaders of `cfg` start their workers with worker_init (above), by its registered name
    (mmengine writes the run's config as Python: a function object would not read back)."""
    seed = cfg.get('randomness', {}).get('seed')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader and loader.get('num_workers', 0) > 0 and 'worker_init_fn' not in loader:
            loader['worker_init_fn'] = dict(type='ade20k_worker_init', num_workers=loader['num_workers'], rank=rank,
                                            seed=seed)


def _stop_requested():
    return bool(_signal_received)


# ---------------------------------------------------------------- divergence

class LossGuard:
    """The non-finite-loss guard, mixed into the run's optimizer wrapper (GuardedOptimWrapper below,
    and common.speed's bf16 and fp16 wrappers): a non-finite loss (on any rank) skips the optimizer step.

    Without a host read where it can: a fused optimizer takes a device flag (`found_inf`, as torch's
    GradScaler gives it) and leaves weights and state as they were when it is set; fp16's GradScaler
    skips a step with non-finite gradients by itself. The flag is left on the wrapper
    (`nonfinite`, a tensor) and the SafetyHook learns it at the next read of the message hub
    (common/deferred.py). Elsewhere (a per-tensor optimizer, and the first step, when a fused SGD
    would create its momentum from the skipped gradients) the loss is read on the host, as before:
    `nonfinite` is then a bool and that micro-batch's backward is skipped. fp16's first steps also
    read the loss scale, to drop the state a skipped step leaves (_first_scaled_step)."""

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
        from mmengine.optim import AmpOptimWrapper
        stock = super().update_params
        bad = ~torch.isfinite(loss.detach()).all()
        optimizer = self.optimizer
        scaled = isinstance(self, AmpOptimWrapper)
        first_scaled = scaled and not optimizer.state  # read on the host, as any first step (below)
        if not first_scaled and (scaled or (getattr(optimizer, '_step_supports_amp_scaling', False)
                                            and optimizer.state)):
            bad = dist.max_over_ranks(bad.float().reshape(()))  # 0-dim, as GradScaler gives it
            if self._inner_count % self._accumulative_counts and getattr(self, '_window_bad', None) is not None:
                bad = torch.maximum(bad, self._window_bad)  # any micro-batch of the window
            self.nonfinite = self._window_bad = bad
            if not scaled:  # GradScaler sets found_inf itself, from the non-finite gradients
                optimizer.found_inf = bad
            try:
                return stock(loss, step_kwargs, zero_kwargs)
            finally:
                optimizer.__dict__.pop('found_inf', None)
        self.nonfinite = dist.any_rank(bool(bad))  # the one host read of this step
        if self.nonfinite:
            self._inner_count += 1  # keep gradient-accumulation counting in step
            self.zero_grad(**(zero_kwargs or {}))
            return
        if first_scaled:
            return _first_scaled_step(self, stock, loss, step_kwargs, zero_kwargs)
        return stock(loss, step_kwargs, zero_kwargs)

    def _clip_grad(self):
        """mmengine's, recording the gradient norm as a tensor (the message hub reads it later)
        instead of float(), which waits for the GPU."""
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        if params:
            norm = self.clip_func(params, **self.clip_grad_kwargs)
            if norm is not None:  # clip_grad_value_ returns None
                self.message_hub.update_scalar(f'train/{self.grad_name}', norm.detach())


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(LossGuard, OptimWrapper):
    """mmengine's OptimWrapper with the non-finite-loss guard: the fp32 runs' wrapper."""


def _first_scaled_step(wrapper, stock_update, loss, step_kwargs, zero_kwargs):
    """An fp16 step while the optimizer has no state yet: a step the loss scaler skips leaves none
    behind. A skipped step is routine there (the initial scale 2^16 overflows until it has come down),
    and torch's fused SGD makes its momentum buffers with empty_like before its kernel learns of the
    overflow and returns: that uninitialised memory would be the momentum from then on (NaN losses).
    Dropped, the next step starts the state afresh, as if it were the first."""
    scale = wrapper.loss_scaler.get_scale()
    result = stock_update(loss, step_kwargs, zero_kwargs)
    if wrapper.loss_scaler.get_scale() < scale:  # the scaler found inf/NaN gradients and skipped the step
        wrapper.optimizer.state.clear()
    return result


def eval_interrupted_at(work_dir):
    """The iteration whose evaluation a signal stopped (the resumed run redoes it), or None."""
    try:
        return int(open(os.path.join(work_dir, EVAL_INTERRUPTED)).read())
    except (OSError, ValueError):
        return None


def _training(runner):
    """Inside runner.train() (its loop is built), not an evaluation of a checkpoint. (runner.train_loop
    would build the training loop, dataloader and all, if it were not.)"""
    from mmengine.runner import BaseLoop
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def _remove_marker(work_dir):
    try:
        os.remove(os.path.join(work_dir, EVAL_INTERRUPTED))
    except FileNotFoundError:
        pass


def make_guard_hook(on_nonfinite='stop'):
    """The hook that turns a skipped step into a stop (default) or a counted skip, and that
    handles pre-emption and injected kills between iterations and inside evaluation."""
    from mmengine.hooks import Hook

    class SafetyHook(Hook):
        priority = 'VERY_LOW'  # after the CheckpointHook of the same iteration

        def __init__(self):
            self.skipped, self.trips = 0, []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            done = runner.iter + 1  # mmengine counts the iteration as done only after its hooks
            flag = getattr(runner.optim_wrapper, 'nonfinite', False)
            terms = {k: v for k, v in (outputs or {}).items() if 'loss' in k and hasattr(v, 'detach')}
            if isinstance(flag, torch.Tensor):  # learnt at the hub's next read (every LOG_INTERVAL)
                values = torch.cat([flag.reshape(1).float(), *(v.detach().reshape(1).float() for v in terms.values())])
                deferred.watch(runner.message_hub, values,
                               lambda got, at=done, keys=list(terms): got[0] and self.trips.append(
                                   (at, dict(zip(keys, got[1:])))))
            elif flag:
                self.trips.append((done, {k: float(v) for k, v in terms.items()}))
            self._handle_trips(runner, done)
            faults.maybe_signal('iter', until=_stop_requested)
            if dist.any_rank(bool(_signal_received)):
                checkpoint = checkpoints.save_now(runner, done)
                raise Preempted(_signal_received[0] if _signal_received else signal.SIGTERM, done, checkpoint)

        def _handle_trips(self, runner, done):
            while self.trips:
                at, terms = self.trips.pop(0)
                shown = ', '.join(f'{k}={v:.4g}' for k, v in terms.items()) or 'no loss terms logged'
                message = f'non-finite loss at iteration {at} ({shown})'
                if at != done:
                    message += f', found at iteration {done} (the guard reads the device every LOG_INTERVAL)'
                self.skipped += 1
                if on_nonfinite == 'stop':
                    raise Diverged(message + '; the optimizer step was skipped, the last checkpoint is untouched')
                console.say(runner.logger, f'[guard] {message}: step skipped ({self.skipped} so far)',
                            level=logging.WARNING)
                runner.message_hub.update_scalar('train/skipped_steps', self.skipped)

        def after_train(self, runner):
            deferred.flush(runner.message_hub)  # a trip in the last iterations before the end
            self._handle_trips(runner, runner.iter)

        def before_val(self, runner):
            # Training's evaluation of iteration runner.iter begins: until it ends, WORK_DIR says so,
            # so a run killed inside it (SIGKILL, a crash, a signal) evaluates that iteration again
            # when resumed, instead of going on (or calling itself finished) without its mIoU.
            if _training(runner) and runner.rank == 0:
                files.atomic_write(str(runner.iter), os.path.join(runner.work_dir, EVAL_INTERRUPTED))

        def after_val(self, runner):
            if _training(runner) and runner.rank == 0:
                _remove_marker(runner.work_dir)

        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            faults.maybe_signal('val', until=_stop_requested)
            if _training(runner) and dist.any_rank(bool(_signal_received)):
                # During training's evaluation: iteration runner.iter is complete (its checkpoint is
                # usually written already; WORK_DIR/eval_interrupted names it, from before_val): the
                # resumed run evaluates it again before going on.
                done = runner.iter
                checkpoint = checkpoints.save_now(runner, done)
                raise Preempted(_signal_received[0] if _signal_received else signal.SIGTERM, done, checkpoint)

        def before_train(self, runner):
            pending = eval_interrupted_at(runner.work_dir)
            if pending is not None and pending == runner.iter:
                console.say(runner.logger, f'[resume] evaluating iteration {pending} again (its evaluation did not finish)')
                runner.val_loop.run()  # its after_val removes the marker
            elif pending is not None and runner.rank == 0:
                _remove_marker(runner.work_dir)  # an older iteration's: that checkpoint is not the one resumed

    return SafetyHook()
