"""Resuming a run: from which checkpoint and iteration, and the data order continued without replay.

mmengine resumes an iteration-based run by drawing every batch before the checkpoint's iteration
from the dataloader and throwing it away (IterBasedTrainLoop.run: "Advance dataloader N steps"):
each of those batches is read from disk and augmented, so resuming at iteration 40 000 of ADE20K
costs as long as 40 000 iterations of data loading before the first step. Here the sampler starts
where the interrupted run's sampler had got to (ResumedInfiniteSampler: the same index order, the
indices before it skipped without loading), and the loop's advance takes nothing from the loader
(ResumedTrainLoop). The batches after the resume are the same images in the same order; their
random augmentations are drawn afresh (the workers are new processes, as they are with mmengine's
replay too, which draws them again from re-seeded workers).

The optimizer state a checkpoint holds is fitted to the resuming run (make_layout_hook): its tensors
take their parameters' memory layout, and the step its implementation (fused or not), whatever the
run that wrote it used: a CPU run's checkpoint resumes on a GPU with channels_last and the fused step.
"""
import itertools

import torch

from mmengine.dataset import InfiniteSampler
from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, LOOPS
from common import checkpoints
from common.out_of_memory import AdaptiveTrainLoop


@DATA_SAMPLERS.register_module(force=True)
class ResumedInfiniteSampler(InfiniteSampler):
    """mmengine's InfiniteSampler, starting `skip` indices into this rank's sequence."""

    def __init__(self, dataset, shuffle=True, seed=None, skip=0):
        super().__init__(dataset, shuffle=shuffle, seed=seed)
        self.skip = skip
        self.indices = itertools.islice(self.indices, skip, None)


class _Advanced:
    """The dataloader iterator, its first `count` batches already skipped by the sampler."""

    def __init__(self, iterator, count):
        self.iterator, self.count = iterator, count

    def __iter__(self):
        return self

    def __next__(self):
        if self.count > 0:
            self.count -= 1
            return None  # mmengine's advance loop discards it
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@LOOPS.register_module(force=True)
class ResumedTrainLoop(AdaptiveTrainLoop):
    """AdaptiveTrainLoop (out_of_memory.py: mmengine's IterBasedTrainLoop) whose resume takes no batch
    from the loader when the sampler skipped them."""

    def run(self):
        sampler = getattr(self.dataloader, 'sampler', None)
        if self._iter > 0 and getattr(sampler, 'skip', None) == self._iter * self.dataloader.batch_size:
            self.dataloader_iterator = _Advanced(self.dataloader_iterator, self._iter)
            print_log(f'[resume] the sampler starts after the {self._iter} trained batches: mmengine\'s '
                      '"advance" below loads none of them', logger='current')
        return super().run()


def plan(cfg, s):
    """(checkpoint to resume from or None, its iteration); sets cfg up to resume from it, or to
    start from --load-from's weights."""
    resume_from, resume_iter = (None if s.no_resume else checkpoints.latest(cfg['work_dir'])), 0
    if resume_from:
        # Only its meta is read here (mmap): mmengine loads the whole file once, when it resumes.
        checkpoint = checkpoints.load(resume_from, trust=s.trust_checkpoint, what='resume checkpoint', mmap=True)
        resume_iter = int(checkpoint.get('meta', {}).get('iter', 0))
        cfg.update(resume=True, load_from=resume_from)
        continue_data_order(cfg, resume_iter)
    elif s.load_from:
        cfg.update(resume=False, load_from=s.load_from)
    return resume_from, resume_iter


def continue_data_order(cfg, resume_iter):
    """Resume the training data where iteration `resume_iter` left it, without replaying it."""
    loader = cfg['train_dataloader']
    sampler = loader.get('sampler', {})
    if sampler.get('type') != 'InfiniteSampler' or cfg['train_cfg'].get('type') != 'IterBasedTrainLoop':
        return  # another sampler or loop: mmengine's own replay
    loader['sampler'] = dict(sampler, type='ResumedInfiniteSampler', skip=resume_iter * loader['batch_size'])
    cfg['train_cfg'] = dict(cfg['train_cfg'], type='ResumedTrainLoop')


# ---------------------------------------------------------------- the optimizer state, fitted to this run

def match_state_layouts(optimizer):
    """Give each optimizer state tensor its parameter's memory layout (strides). A checkpoint written
    by an NCHW run (a CPU run, --channels-last off) and resumed with channels_last, or the reverse,
    loads its momentum and Adam moments with the old strides; the fused kernels refuse tensors of
    different layouts, and elementwise ops would produce mixed ones. Returns how many were changed."""
    changed = 0
    for group in optimizer.param_groups:
        for param in group['params']:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if (isinstance(value, torch.Tensor) and value.shape == param.shape and value.dim() > 1
                        and value.stride() != param.stride()):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
                    changed += 1
    return changed


# Per-group settings of how the step runs, not what it computes: torch's load_state_dict takes them from
# the checkpoint, so a run resumed from an unfused run's checkpoint would step unfused (and refuse the
# loss guard's found_inf, which only fused steps take), and the reverse.
STEP_IMPLEMENTATION = ('fused', 'foreach')


def make_layout_hook():
    """The hook that fits a resumed optimizer state to this run: each state tensor in its parameter's
    memory layout (match_state_layouts) and the step implementation this run chose (fused or not),
    whatever the checkpoint's run used. mmengine resumes after `before_run` and before `before_train`."""
    from mmengine.hooks import Hook
    from mmengine.logging import print_log

    class OptimizerStateFitHook(Hook):
        priority = 'VERY_HIGH'

        def before_run(self, runner):
            self.chosen = [{k: g.get(k) for k in STEP_IMPLEMENTATION} for g in _optimizer(runner).param_groups]

        def before_train(self, runner):
            optimizer = _optimizer(runner)
            for group, chosen in zip(optimizer.param_groups, self.chosen):
                group.update(chosen)
            changed = match_state_layouts(optimizer)
            if changed:
                print_log(f'[resume] {changed} optimizer state tensors given their parameters\' memory layout '
                          '(the checkpoint was written with the other one)', logger='current')

    return OptimizerStateFitHook()


def _optimizer(runner):
    return runner.optim_wrapper.optimizer
