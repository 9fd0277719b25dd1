"""Count the points where the host would wait for the GPU inside one training iteration.

On a GPU each of these blocks the Python thread until the device has finished everything queued
before it: reading a value (`.item()`, `.tolist()`, `bool()`, `float()`, `.numpy()`, `.cpu()`), and
operations whose output size depends on the data (`nonzero`, boolean-mask indexing, `masked_select`,
`unique`). On a CPU nothing waits, but the same calls are made, so counting them here proves the GPU
iteration free of them. The counter is a TorchFunctionMode around the run_iter of the run's training
loop (common/out_of_memory.py's AdaptiveTrainLoop, resume's is built on it) of one chosen iteration:
the model's forward and backward, the optimizer step and every hook.
"""
import traceback

import torch
from torch.overrides import TorchFunctionMode

from tools.gpu_check import host_reads

# Which reads a script makes by its nature, and how they are recognised, is tools/gpu_check/host_reads.py's: the
# GPU check's sync-free stage decides the same way.
MATCHER_FRAMES, OHEM_FRAMES = host_reads.MATCHER_FRAMES, host_reads.OHEM_FRAMES
BY_NATURE = {f'train_{name}': frames for name, frames in host_reads.BY_NATURE.items()}
MATCHER_SCRIPTS = set(BY_NATURE)  # the scripts whose reads by nature are counted apart

_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
          torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
          torch.Tensor.nonzero, torch.nonzero, torch.Tensor.masked_select, torch.masked_select,
          torch.Tensor.unique, torch.unique}


def _bool_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class _Mode(TorchFunctionMode):
    def __init__(self, found):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        waits = func in _READS or (func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
                                    and len(args) > 1 and _bool_index(args[1]))
        if waits:
            stack = traceback.extract_stack()[:-1]
            self.found.append((getattr(func, '__qualname__', str(func)), stack))
        return func(*args, **kwargs)


class HostReads:
    """`with HostReads(iteration=3) as reads:` counts the host reads of that training iteration
    (1-based) of every run in the block."""

    def __init__(self, iteration, script=None):
        self.iteration, self.found, self.counted, self.script = iteration, [], False, script

    def __enter__(self):
        from common.out_of_memory import AdaptiveTrainLoop  # the run's training loop (resume's is built on it)
        self._loop, self._original = AdaptiveTrainLoop, AdaptiveTrainLoop.run_iter
        original, reads = self._original, self

        def run_iter(loop, data_batch):
            if loop._iter + 1 != reads.iteration:
                return original(loop, data_batch)
            reads.counted = True
            with _Mode(reads.found):
                return original(loop, data_batch)
        AdaptiveTrainLoop.run_iter = run_iter
        return self

    def __exit__(self, *exc):
        self._loop.run_iter = self._original

    def _in_matcher(self, stack):
        return host_reads.by_nature(stack, self.script) is not None

    def in_matcher(self):
        return [r for r in self.found if self._in_matcher(r[1])]

    def outside_matcher(self):
        return [r for r in self.found if not self._in_matcher(r[1])]

    def report(self):
        lines = []
        for name, stack in self.outside_matcher()[:10]:
            where = [f for f in stack if 'site-packages/torch/' not in f.filename][-3:]
            lines.append(f'{name} at ' + ' <- '.join(f'{f.filename.split("site-packages/")[-1]}:{f.lineno}'
                                                    for f in reversed(where)))
        return '\n'.join(lines)
