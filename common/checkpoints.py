"""Checkpoint files: written whole, found again, saved on pre-emption, loaded safely and exactly.

- Writing: every file mmengine writes locally (checkpoints) goes through files.atomic_write, so a
  reader sees the old file or the new one, never half of one; a full disk fails the write and
  leaves the previous checkpoint (disk_full_error says so).
- Finding: `latest(work_dir)` is the newest *complete* checkpoint, even when the `last_checkpoint`
  pointer is missing, empty or names a torn file. `save_now` writes one at the current iteration
  (pre-emption), recorded like the periodic ones.
- Loading safely (torch>=2.6 `weights_only=True`): mmengine 0.10.7 checkpoints pickle more than
  tensors: the message hub's HistoryBuffer objects (whose statistics methods are pickled as
  `getattr(HistoryBuffer, 'mean')`), numpy arrays, dtypes and scalars. `install()` allows exactly
  those on top of torch's own safe set, so mmengine's plain `torch.load` calls (resume, load_from,
  Pretrained init) keep torch's protection. Anything else in a file (a class, a function to call) is
  refused. `--trust-checkpoint` is the explicit way out.
- Loading exactly: `load_exactly` puts every tensor of a checkpoint into a model or refuses, so a
  checkpoint of another script or variant never half-loads (evaluation, predict, export).
- safetensors files (`*.safetensors`, --export-safetensors writes them): tensors and a string table,
  no pickle. `load` reads them as {'state_dict': tensors} (plus 'meta': {'dataset_meta'} when the
  file names its classes), so --load-from, --eval-only, --predict and --export-onnx take one like a
  .pth; `install()` registers the same reader in mmengine's CheckpointLoader (its registry of
  checkpoint sources), which the Runner's load_from and mmseg.apis.init_model go through. Such a
  file has no iteration, optimizer or message hub: it starts a run, it never resumes one (`latest`
  takes only WORK_DIR's .pth files).
"""
import errno
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

from common import dist, files
from common.errors import SetupError

TRUST_FLAG = '--trust-checkpoint'
# HistoryBuffer's built-in statistics; its registry of them fills only when a first buffer exists.
_STATISTICS = ('min', 'max', 'current', 'mean')


# ---------------------------------------------------------------- loading safely

def _history_buffer_getattr(obj, name):
    """Stands in for `getattr` while unpickling: only HistoryBuffer's statistics methods."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and (name in _STATISTICS or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not a HistoryBuffer statistics method')


def allowed_globals():
    import numpy as np
    from mmengine.logging import HistoryBuffer
    numpy_dtypes = {type(np.dtype(t)) for t in np.sctypeDict.values()}
    return [HistoryBuffer, np.ndarray, np.dtype, np.core.multiarray._reconstruct, np.core.multiarray.scalar,
            *sorted(numpy_dtypes, key=str), (_history_buffer_getattr, 'builtins.getattr')]


def install(trust=False):
    """Make every torch.load in this process (mmengine's included) safe, or, when the user passed
    --trust-checkpoint, the old unrestricted pickle."""
    import torch
    if trust:
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    else:
        os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
        torch.serialization.add_safe_globals(allowed_globals())
    register_safetensors_loader()


def _culprit(message):
    """What torch's weights-only unpickler stopped at, out of its long message."""
    found = re.search(r'Unsupported global: GLOBAL ([\w.]+)', message)
    if found:
        return found.group(1)
    after = message.split('WeightsUnpickler error:', 1)[-1]
    lines = [line.strip() for line in after.splitlines() if line.strip()]
    return lines[0][:300] if lines else message[:300]


def load(path, map_location='cpu', trust=False, what='checkpoint', mmap=False):
    """torch.load with weights_only unless trusted; a refused or unreadable file is a SetupError.
    mmap: the tensors stay in the file until touched (reading the meta of a 1 GB checkpoint is then
    instant instead of a full read)."""
    import torch
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SetupError(f'{what} not found: {path}', 'check the path')
    if is_safetensors(path):  # nothing to unpickle: --trust-checkpoint changes nothing here
        return read_safetensors(path, what, map_location)
    if _has_safetensors_header(path):  # torch.load would take it for a pickle and refuse it as one
        raise SetupError(f'{what} {path} is a safetensors file without the .safetensors suffix',
                         'rename it to end in .safetensors (that name is what selects the reader)')
    if not trust:
        install()
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as exc:
        culprit = _culprit(str(exc))
        raise SetupError(
            f'{what} {path} was refused: loading it would run code or build objects other than tensors '
            f'and mmengine log records (it references {culprit}). Nothing from it was executed.',
            f'if you made this file yourself or trust its source, rerun with {TRUST_FLAG}') from None
    except Exception as exc:  # truncated zip, not a torch file, disk error
        raise SetupError(f'{what} {path} cannot be read: {type(exc).__name__}: {exc}',
                         'the file is damaged or not a PyTorch checkpoint; fetch or save it again') from None


# ---------------------------------------------------------------- safetensors files

SAFETENSORS_SUFFIX = '.safetensors'
# mmengine picks a checkpoint's loader by matching each registered prefix as a regular expression at
# the start of the path (its own s3 prefix is a pattern too): this one matches a path whose name ends
# in .safetensors, and is tried after the URL schemes and before the plain local loader ('').
SAFETENSORS_SCHEME = r'(?i)(?=.*\.safetensors$)'
REINSTALL_SAFETENSORS = 'run `bash setup.sh` (it installs the pinned safetensors of requirements/lock.txt)'


def is_safetensors(path):
    return os.fspath(path).lower().endswith(SAFETENSORS_SUFFIX)


def _has_safetensors_header(path):
    """The format's first bytes: a little-endian 8-byte header length, then the header's JSON `{`."""
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b'{' and 0 < int.from_bytes(head[:8], 'little') < size


def _device(map_location):
    """safetensors' device for torch.load's map_location: a name or torch.device; else (None, a
    function or a mapping, which only torch.load understands) the CPU."""
    import torch
    return str(map_location) if isinstance(map_location, (str, torch.device)) else 'cpu'


def read_safetensors(path, what='checkpoint', map_location='cpu'):
    """{'state_dict': {name: tensor}} of a safetensors file, and 'meta': {'dataset_meta': classes and
    palette} when its metadata names them (mmseg.apis.init_model reads that). SetupError when the file
    is damaged or is not one."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise SetupError(f'{what} {path} is a safetensors file, and the safetensors package is not installed',
                         REINSTALL_SAFETENSORS) from None
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SetupError(f'{what} not found: {path}', 'check the path')
    try:
        with safe_open(path, framework='pt', device=_device(map_location)) as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # a header cut short or not JSON, data cut short, not a safetensors file
        raise SetupError(f'{what} {path} cannot be read as safetensors: {type(exc).__name__}: {exc}',
                         'the file is damaged or not a safetensors file; export it again '
                         '(--export-safetensors CKPT) or fetch it again') from None
    checkpoint = dict(state_dict=state)
    if 'classes' in metadata and 'palette' in metadata:
        try:
            checkpoint['meta'] = dict(dataset_meta=dict(classes=tuple(json.loads(metadata['classes'])),
                                                        palette=json.loads(metadata['palette'])))
        except ValueError:
            pass  # names in a form of someone else's: the tensors are what counts
    return checkpoint


def register_safetensors_loader():
    """read_safetensors as mmengine's loader of *.safetensors paths (CheckpointLoader.register_scheme):
    the Runner's load_from (--load-from), a Pretrained init_cfg and mmseg.apis.init_model then read
    such a file. Idempotent."""
    from mmengine.runner import CheckpointLoader

    def load_from_safetensors(filename, map_location=None):  # mmengine logs the name after 'load_from_'
        return read_safetensors(filename, 'checkpoint', map_location)

    CheckpointLoader.register_scheme(SAFETENSORS_SCHEME, load_from_safetensors, force=True)


# ---------------------------------------------------------------- loading exactly

def state_dict(path, trust, flag):
    """The checkpoint's state dict, read through load() (no code runs from the file)."""
    return state_of(load(path, trust=trust, what=f'{flag} checkpoint'), path, flag)


def state_of(checkpoint, path, flag):
    """The state dict of a checkpoint load() read: its tensors, without a DDP 'module.' prefix."""
    import torch
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SetupError(f'{flag} checkpoint {path} holds no state dict of tensors',
                         'pass a checkpoint written by a training run (iter_N.pth, best_mIoU_iter_N.pth)')
    # DDP-wrapped models were saved with a 'module.' prefix by some tools.
    return {k.removeprefix('module.'): v for k, v in state.items()}


def load_exactly(model, state, path):
    """Load every tensor or refuse: a checkpoint of another script or BACKBONE must not half-load."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    if missing or unexpected or reshaped:
        found = '; '.join(f'{what}: {", ".join(keys[:4])}{" ..." if len(keys) > 4 else ""}'
                          for what, keys in (('missing', missing), ('unexpected', unexpected),
                                             ('other shape', reshaped)) if keys)
        raise SetupError(f'checkpoint {path} does not fit this model ({found})',
                         'pass the model settings its training run used (e.g. --backbone), '
                         'or use the train script that wrote it')
    model.load_state_dict(state, strict=False)  # strict=False: only num_batches_tracked may be absent


# ---------------------------------------------------------------- writing

ATOMIC_BACKEND = 'atomic_local'  # mmengine file backend name: CheckpointHook(backend_args=BACKEND_ARGS)
BACKEND_ARGS = dict(backend=ATOMIC_BACKEND)


def _register_atomic_backend():
    """mmengine's LocalBackend whose writes (checkpoints, the best checkpoint) go through
    files.atomic_write, registered as a file backend: a run's CheckpointHook names it in its
    backend_args. The `last_checkpoint` pointer is written with plain open() by CheckpointHook;
    resume does not trust it blindly (latest())."""
    from mmengine.fileio import register_backend
    from mmengine.fileio.backends import LocalBackend

    class AtomicLocalBackend(LocalBackend):
        def put(self, obj, filepath):
            files.atomic_write(obj, str(filepath), fault_point='save')

        def put_text(self, obj, filepath, encoding='utf-8'):
            files.atomic_write(obj.encode(encoding), str(filepath), fault_point='save')

    register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


_register_atomic_backend()


def write_atomically(cfg):
    """A run's checkpoints through the atomic backend (the periodic and best ones: CheckpointHook; a
    pre-emption's: save_now); the run's own config imports this module, which registers it."""
    cfg['default_hooks']['checkpoint']['backend_args'] = dict(BACKEND_ARGS)


def remove_stale_temporaries(work_dir):
    """Temporary files of writes that a killed run left behind."""
    if os.path.isdir(work_dir):
        for name in os.listdir(work_dir):
            if files.is_temporary(name):
                os.unlink(os.path.join(work_dir, name))


def is_disk_full(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(exc, work_dir):
    return SetupError(
        f'could not write a checkpoint in {work_dir}: {exc.strerror or exc}. '
        f'The previous checkpoint {latest(work_dir) or "(none yet)"} is complete and was not touched.',
        'free disk space (or set --work-dir elsewhere) and rerun the same command: it resumes from it')


def save_now(runner, done):
    """A checkpoint after `done` iterations, recorded like the periodic ones (so the rotation of the
    last N removes it in time), and the pointer to it. Every rank waits until it is written, so no
    rank exits (and makes torchrun stop the others) while rank 0 is still writing."""
    name = f'iter_{done}.pth'
    path = os.path.join(runner.work_dir, name)
    keep = list(runner.message_hub.get_info('keep_ckpt_ids', []))
    if done not in keep:
        keep.append(done)
        runner.message_hub.update_info('keep_ckpt_ids', keep)
    if not os.path.isfile(path):  # the periodic hook may have just written this iteration
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False,  # meta iter = done, as the hook's
                               backend_args=dict(BACKEND_ARGS))
    if runner.rank == 0:
        files.atomic_write(path.encode(), os.path.join(runner.work_dir, 'last_checkpoint'), fault_point='save')
    dist.barrier()
    return path


# ---------------------------------------------------------------- finding

def complete(path):
    """A checkpoint file whose zip directory is intact (a torch.save file cut short has none)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def latest(work_dir):
    """The newest complete checkpoint of WORK_DIR: the one `last_checkpoint` points at, or, if that
    pointer is missing, empty or points at nothing usable, the highest complete iter_N.pth. Only a
    .pth file resumes: one holds the iteration, optimizer and message hub a resume needs."""
    work_dir = Path(work_dir)
    pointer = work_dir / 'last_checkpoint'
    target = pointer.read_text().strip() if pointer.is_file() else ''
    if target.endswith('.pth') and Path(target).is_file() and complete(target):
        return target
    numbered = sorted(work_dir.glob('iter_*.pth'), key=lambda p: int(p.stem.split('_')[1]), reverse=True)
    return next((str(p) for p in numbered if complete(p)), None)
