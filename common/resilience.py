"""What stops a long run cleanly: pre-emption signals and a non-finite loss.

- SIGTERM or SIGINT (a scheduler's pre-emption, Ctrl-C) sets a flag; after the current iteration
  a checkpoint is saved and the run stops with exit code 128 + signal; the same command resumes.
  A second signal stops at once.
- A non-finite loss skips the optimizer step (weights stay finite) and, by default, stops the run
  naming the iteration and each loss term; the last good checkpoint stays as it was.
(Checkpoints themselves are written atomically: common/checkpoints.py. Test faults: common/faults.py.)
"""
import signal

import torch

from common import checkpoints, dist, faults

EXIT_DIVERGED = 3


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
            if dist.any_rank(not bool(torch.isfinite(loss.detach()).all())):
                cls.skipped_at = True
                self._inner_count += 1  # keep gradient-accumulation counting in step
                self.zero_grad(**(zero_kwargs or {}))
                return
            cls.skipped_at = None
            return original(self, loss, step_kwargs, zero_kwargs)

        update_params._guarded = True
        OptimWrapper.update_params = update_params
        faults.install_nan_losses()


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
            faults.maybe_signal('iter')
            if dist.any_rank(bool(_signal_received)):
                checkpoint = checkpoints.save_now(runner, done)
                raise Preempted(_signal_received[0] if _signal_received else signal.SIGTERM, done, checkpoint)

        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            faults.maybe_signal('val')

    _LossGuard.install()
    return SafetyHook()
