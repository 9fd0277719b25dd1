"""Out of GPU memory in a training step: go on with half the images per pass, same total batch.

When a training step runs out of device memory, AdaptiveTrainLoop (the run's training loop) redoes
that step with each batch of BATCH_PER_GPU images run as 2 forward/backward passes (then 4, ...)
whose gradients add up before the one optimizer step: BATCH_PER_GPU halves and ACCUMULATE doubles
where memory is concerned, while the images of each optimizer step, the total batch, the LR
schedule, the iteration count and the checkpoints stay the recipe's. No step is lost: the gradients
of the failed step are dropped and the step is redone (with ACCUMULATE > 1, the batches of its
accumulation window since the last optimizer step are redone too: the loop keeps them until the step).
The console, the log and summary.json (`out_of_memory`) say so, with the flags that start the next
run this way. As with --accumulate, batch normalisation then sees fewer images per pass.

It stops with one clear error (exit 2) when even 1 image per GPU does not fit, naming the settings
that lower memory; and in a distributed run at once: one rank's failure leaves the others waiting in
a collective, so the ranks cannot agree to split their batches (the error gives the flags to rerun
with; the run resumes from its last checkpoint).

A test makes a step run out of memory on purpose: ADE_TRAIN_FAULT=oom@iter=N (from the N-th iteration,
a pass of more than 1 image fails) or oom_any@iter=N (every pass fails): common/faults.py.
"""
import logging

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop

from common import console, faults
from common.errors import SetupError

LOWER_MEMORY = ('--activation-ckpt (where the backbone supports it), --precision bf16 (fp32 runs), a smaller '
                '--crop-size, or a GPU with more memory')


@LOOPS.register_module()
class AdaptiveTrainLoop(IterBasedTrainLoop):
    """mmengine's IterBasedTrainLoop whose step, out of device memory, is redone in more passes."""

    passes = 1  # forward/backward passes per batch

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.adaptations = []   # what summary.json records
        self._window = []       # batches since the last optimizer step (redone after an adaptation)

    def run_iter(self, data_batch):
        self.runner.call_hook('before_train_iter', batch_idx=self._iter, data_batch=data_batch)
        outputs = self._step(data_batch)
        self.runner.call_hook('after_train_iter', batch_idx=self._iter, data_batch=data_batch, outputs=outputs)
        self._iter += 1

    def _step(self, data_batch):
        wrapper = self.runner.optim_wrapper
        accumulate = getattr(wrapper, '_accumulative_counts', self.passes) // self.passes  # the run's ACCUMULATE
        if self._iter % accumulate == 0:
            self._window.clear()
        redo = []
        while True:
            try:
                for earlier in redo:
                    self._passes(earlier)
                outputs = self._passes(data_batch)
                break
            except torch.OutOfMemoryError as exc:
                message = str(exc).split('. GPU')[0]  # not the exception: its traceback holds the step's tensors
            self._adapt(data_batch, accumulate, message)
            redo = list(self._window)
        if accumulate > 1:
            self._window.append(data_batch)
        return outputs

    def _passes(self, data_batch):
        """train_step over the batch in `passes` equal parts; the logged values are their mean."""
        model, wrapper = self.runner.model, self.runner.optim_wrapper
        images = len(data_batch['inputs'])
        size = images // self.passes
        outputs = []
        for start in range(0, images, size):
            part = {key: value[start:start + size] for key, value in data_batch.items()}
            faults.maybe_out_of_memory(self._iter + 1, size)
            outputs.append(model.train_step(part, optim_wrapper=wrapper))
        if len(outputs) == 1:
            return outputs[0]
        return {key: sum(out[key] for out in outputs) / len(outputs) for key in outputs[0]}

    def _adapt(self, data_batch, accumulate, message):
        runner, wrapper = self.runner, self.runner.optim_wrapper
        images = len(data_batch['inputs'])
        per_pass = images // self.passes
        world = runner.world_size
        where = f'out of GPU memory at iteration {self._iter + 1} with {per_pass} image(s) per GPU per pass ({message})'
        more = next((n for n in range(self.passes + 1, images + 1) if images % n == 0), None)
        if world > 1 or more is None or not isinstance(wrapper, OptimWrapper):
            if more is None:
                raise SetupError(f'{where}: even 1 image per GPU does not fit',
                                 f'lower the memory a step takes: {LOWER_MEMORY}')
            fits = images // more
            raise SetupError(f'{where}; a distributed run cannot split its batches on one rank alone',
                             f'rerun with --batch-per-gpu {fits} --accumulate {accumulate * more} (the same total batch; '
                             f'it resumes from the last checkpoint), or {LOWER_MEMORY}')
        wrapper.zero_grad()  # the failed step's gradients (and its window's, redone below)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.passes = more
        window_start = self._iter - self._iter % accumulate
        wrapper._accumulative_counts = accumulate * more  # a pass is what the wrapper counts and scales
        wrapper.initialize_count_status(runner.model, window_start * more, self._max_iters * more)
        fits = images // more
        self.adaptations.append(dict(iter=self._iter + 1, batch_per_gpu=fits, accumulate=accumulate * more))
        console.say(runner.logger, f'[memory] {where}: redoing it and going on with {fits} image(s) per pass, '
                                   f'{more} passes per batch (as BATCH_PER_GPU {fits}, ACCUMULATE {accumulate * more}): '
                                   f'the same {images * accumulate * world} images per optimizer step, schedule and '
                                   f'iterations. To start this way: --batch-per-gpu {fits} --accumulate {accumulate * more}',
                    level=logging.WARNING)


def adaptive(cfg):
    """The run's own training loop is AdaptiveTrainLoop (or a loop built on it), where it is mmengine's."""
    if cfg['train_cfg'].get('type') == 'IterBasedTrainLoop':
        cfg['train_cfg'] = dict(cfg['train_cfg'], type='AdaptiveTrainLoop')


def adaptations(runner):
    loop = getattr(runner, '_train_loop', None)
    return list(getattr(loop, 'adaptations', []))
