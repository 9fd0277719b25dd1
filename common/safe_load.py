"""Load checkpoints without running code from them (torch>=2.6 `weights_only=True`).

mmengine 0.10.7 checkpoints pickle more than tensors: the message hub's HistoryBuffer objects (whose
statistics methods are pickled as `getattr(HistoryBuffer, 'mean')`), numpy arrays, dtypes and
scalars. `install()` allows exactly those on top of torch's own safe set, so mmengine's plain
`torch.load` calls (resume, load_from, Pretrained init) keep torch's protection. Anything else in a
file (a class, a function to call) is refused. `--trust-checkpoint` is the explicit way out.
"""
import os
import pickle
import re

import numpy as np
import torch

from common.errors import SetupError

TRUST_FLAG = '--trust-checkpoint'


# HistoryBuffer's built-in statistics; its registry of them fills only when a first buffer exists.
_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name):
    """Stands in for `getattr` while unpickling: only HistoryBuffer's statistics methods."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and (name in _STATISTICS or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not a HistoryBuffer statistics method')


def allowed_globals():
    from mmengine.logging import HistoryBuffer
    numpy_dtypes = {type(np.dtype(t)) for t in np.sctypeDict.values()}
    return [HistoryBuffer, np.ndarray, np.dtype, np.core.multiarray._reconstruct, np.core.multiarray.scalar,
            *sorted(numpy_dtypes, key=str), (_history_buffer_getattr, 'builtins.getattr')]


def install(trust=False):
    """Make every torch.load in this process (mmengine's included) safe, or, when the user passed
    --trust-checkpoint, the old unrestricted pickle."""
    if trust:
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    else:
        os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
        torch.serialization.add_safe_globals(allowed_globals())


def _culprit(message):
    """What torch's weights-only unpickler stopped at, out of its long message."""
    found = re.search(r'Unsupported global: GLOBAL ([\w.]+)', message)
    if found:
        return found.group(1)
    after = message.split('WeightsUnpickler error:', 1)[-1]
    lines = [line.strip() for line in after.splitlines() if line.strip()]
    return lines[0][:300] if lines else message[:300]


def load(path, map_location='cpu', trust=False, what='checkpoint'):
    """torch.load with weights_only unless trusted; a refused or unreadable file is a SetupError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SetupError(f'{what} not found: {path}', 'check the path')
    if not trust:
        install()
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        culprit = _culprit(str(exc))
        raise SetupError(
            f'{what} {path} was refused: loading it would run code or build objects other than tensors '
            f'and mmengine log records (it references {culprit}). Nothing from it was executed.',
            f'if you made this file yourself or trust its source, rerun with {TRUST_FLAG}') from None
    except Exception as exc:  # truncated zip, not a torch file, disk error
        raise SetupError(f'{what} {path} cannot be read: {type(exc).__name__}: {exc}',
                         'the file is damaged or not a PyTorch checkpoint; fetch or save it again') from None
