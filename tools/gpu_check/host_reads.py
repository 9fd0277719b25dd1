"""Host reads by nature: the places where a recipe's own training step must wait for the GPU, and the
one decision made from a stack of frames: is this read one of them?

Two places ask it: tests/hostreads.py, which counts every host read of an iteration on the CPU, and
the GPU check's sync-free stage (tools/gpu_check/inprocess.py), where `Syncs(script).armed()` runs an
iteration under torch.cuda.set_sync_debug_mode: 'error' for a script without reads by nature (the
first sync raises where it happens); 'warn' for one with them, because 'error' cannot let a sync
through and go on, and each warning is decided here: a read by nature is counted under the place it
happened, any other raises the same RuntimeError 'error' would, at the same point.
"""
import contextlib
import traceback
import warnings

# Where a recipe's own loss needs a count only the data knows:
# - a Hungarian matcher (scipy, on the CPU): the assigner and its sampler; the heads' losses, which
#   index the matched queries; mmcv's deformable attention, which asserts its input shapes against a
#   device tensor (and on a CPU splits by them);
# - OHEM (mmseg's OHEMPixelSampler, STDC): it sorts the valid pixels (a boolean-mask selection) to find the
#   min_kept-th probability. A sync-free version is possible (sort every pixel, invalid ones last);
#   until then its reads are said, not hidden.
MATCHER_FRAMES = ('mmdet/models/task_modules/assigners', 'mmdet/models/task_modules/samplers',
                  'scipy/optimize', 'mmdet/models/dense_heads/mask2former_head.py',
                  'mmdet/models/dense_heads/maskformer_head.py', 'mmcv/ops/multi_scale_deform_attn.py',
                  # mmseg's wrappers turn each label map into instance targets: torch.unique of its classes
                  'mmseg/models/decode_heads/mask2former_head.py', 'mmseg/models/decode_heads/maskformer_head.py')
# STDC: OHEM, and its boundary head's targets (`t[t > 0.1] = 1`, a masked assignment that torch turns
# into an index list; masked_fill would not wait: a candidate for a patch, said here until then).
OHEM_FRAMES = ('mmseg/structures/sampler/ohem_pixel_sampler.py', 'mmseg/models/decode_heads/stdc_head.py')
BY_NATURE = {'mask2former': MATCHER_FRAMES, 'maskformer': MATCHER_FRAMES, 'stdc': OHEM_FRAMES}

SYNC_MESSAGE = 'called a synchronizing CUDA operation'  # what torch says in 'warn' and 'error' mode


def frames_of(script):
    """The file parts that mark `script`'s reads by nature ('mask2former' or 'train_mask2former'); ()
    for a script without any."""
    return BY_NATURE.get(str(script).removeprefix('train_'), ())


def _short(filename):
    return filename.replace('\\', '/').split('site-packages/')[-1]


def by_nature(frames, script):
    """Where in `frames` (outermost first, as traceback.extract_stack gives them) `script` reads the
    host by its nature: 'file:line function' of the innermost frame in one of its places; None when
    the read is not one of them (any read of a script that has none)."""
    parts = frames_of(script)
    for frame in reversed(frames):
        if any(part in frame.filename.replace('\\', '/') for part in parts):
            return f'{_short(frame.filename)}:{frame.lineno} {frame.name}'
    return None


def where(frames, count=4):
    """The innermost `count` frames outside torch, the warnings machinery and this module: where a read is."""
    kept = [f for f in frames if not any(part in f.filename.replace('\\', '/') for part in (
        'site-packages/torch/', '/warnings.py', 'gpu_check/host_reads.py'))]
    return ' <- '.join(f'{_short(f.filename)}:{f.lineno} {f.name}' for f in reversed(kept[-count:]))


class Syncs:
    """The syncs of one script's checked iterations: those by nature counted in `expected` (place ->
    count), any other one an error."""

    def __init__(self, script):
        self.script, self.expected = script, {}

    def seen(self, frames):
        """One sync with its stack: counted when it is by nature, else RuntimeError."""
        place = by_nature(frames, self.script)
        if place is None:
            raise RuntimeError(f'{SYNC_MESSAGE} (not one of {self.script}\'s host reads by nature) at '
                               f'{where(frames)}')
        self.expected[place] = self.expected.get(place, 0) + 1

    @contextlib.contextmanager
    def recording(self):
        """Inside: each sync warning goes to seen() with the stack it was raised from (the warnings'
        own filters would show only the first of each line); every other warning as before."""
        with warnings.catch_warnings():  # restores the filters and showwarning on the way out
            warnings.filterwarnings('always', message=f'.*{SYNC_MESSAGE}')
            previous = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if SYNC_MESSAGE in str(message):
                    self.seen(traceback.extract_stack()[:-1])
                else:
                    previous(message, category, filename, lineno, file, line)
            warnings.showwarning = show
            yield self

    @contextlib.contextmanager
    def armed(self):
        """Inside: torch.cuda's sync debug mode as the module docstring says; 'default' after."""
        import torch
        with self.recording() if frames_of(self.script) else contextlib.nullcontext():
            torch.cuda.set_sync_debug_mode('warn' if frames_of(self.script) else 'error')
            try:
                yield self
            finally:
                torch.cuda.set_sync_debug_mode('default')
