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
"""
import itertools

from mmengine.dataset import InfiniteSampler
from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, LOOPS
from mmengine.runner import IterBasedTrainLoop

from common import checkpoints


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
class ResumedTrainLoop(IterBasedTrainLoop):
    """IterBasedTrainLoop whose resume takes no batch from the loader when the sampler skipped them."""

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
