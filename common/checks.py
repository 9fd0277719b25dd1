"""Can this run start? Everything checked before anything is built or a GPU is touched.

`preflight(cfg, s)` checks the installation (mmcv's compiled ops, the packages the config names),
the pretrained files, a --load-from checkpoint and the dataset, and raises SetupError naming what
is wrong. `dataset(root)` checks the ADEChallengeData2016 layout, that every image has a label and back,
that each file opens and ends whole (not cut short by a download or unzip), that image and label
sizes agree, and that labels hold only 0..150. Results
are cached per file (path, size, mtime), so the 25k-file ADE20K check costs its time once.
"""
import hashlib
import importlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common import ade20k, checkpoints, config, dist, files, gpu, pretrained, validate, weights_fit
from common.errors import SetupError

CACHE_DIR = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'ade20k-train' / 'dataset-checks'
REINSTALL = 'run `bash setup.sh` at the repository root (it rebuilds .venv from requirements/lock.txt)'
DOWNLOAD_HINT = ('download ADE20K with `python -m common.download_ade20k` (it unpacks to data/ade/), '
                 'point --data-root at your ADEChallengeData2016 folder, or try --demo')
MAX_LISTED = 5
# TRACKER's packages: tensorboard is in the stack; W&B's and MLflow's client are the optional extra.
TRACKERS_INSTALL = ('run `make trackers` at the repository root (it installs requirements/lock-trackers.txt: '
                    '.venv/bin/python -m pip install --require-hashes --no-deps -r requirements/lock-trackers.txt), '
                    'or pass another --tracker')
TRACKER_PACKAGES = {'tensorboard': ('tensorboard', REINSTALL), 'wandb': ('wandb', TRACKERS_INSTALL),
                    'mlflow': ('mlflow', TRACKERS_INSTALL)}


def _layout(root):
    root = Path(root)
    if not root.is_dir():
        raise SetupError(f'dataset not found: {root} does not exist', DOWNLOAD_HINT)
    if (root / 'ADEChallengeData2016').is_dir():
        raise SetupError(f'{root} holds ADEChallengeData2016/ instead of being it',
                         f'use --data-root {root / "ADEChallengeData2016"}')
    missing = [f'{kind}/{split}' for kind in ('images', 'annotations') for split in ade20k.SPLITS.values()
               if not (root / kind / split).is_dir()]
    if missing:
        present = sorted(str(p.relative_to(root)) for p in root.glob('*/*') if p.is_dir())
        raise SetupError(
            f'dataset {root} lacks the ADEChallengeData2016 folders {", ".join(missing)} '
            f'(found: {", ".join(present) or "nothing"})',
            'the layout must be images/{training,validation} and annotations/{training,validation}; ' + DOWNLOAD_HINT)


def _pairs(root, split):
    """Matched (image, label) paths of a split; a file without its partner is an error."""
    img_dir, ann_dir = Path(root, 'images', split), Path(root, 'annotations', split)
    images = {p.stem: p for p in img_dir.iterdir() if p.suffix == ade20k.IMG_SUFFIX}
    labels = {p.stem: p for p in ann_dir.iterdir() if p.suffix == ade20k.SEG_SUFFIX}
    if not images:
        others = sorted({p.suffix for p in img_dir.iterdir()}) or ['nothing']
        raise SetupError(f'no {ade20k.IMG_SUFFIX} images in {img_dir} (found {", ".join(others)})', DOWNLOAD_HINT)
    unlabeled = sorted(set(images) - set(labels))
    if unlabeled:
        examples = ', '.join(str(images[s]) for s in unlabeled[:MAX_LISTED])
        raise SetupError(f'{len(unlabeled)} images in {img_dir} have no label {ann_dir}/<name>.png: {examples}',
                         'restore the missing labels or remove those images')
    orphans = sorted(set(labels) - set(images))
    if orphans:
        examples = ', '.join(str(labels[s]) for s in orphans[:MAX_LISTED])
        raise SetupError(f'{len(orphans)} labels in {ann_dir} have no image: {examples}',
                         'restore the missing images or remove those labels')
    return [(images[s], labels[s]) for s in sorted(images)]


# The end of a whole file: a JPEG's end-of-image marker, PNG's IEND chunk (always these 12 bytes:
# length 0, type, CRC). A download or unzip cut short loses it; PIL's verify() reads a JPEG's headers
# only, and OpenCV decodes what is there (a flat colour below the cut) with a warning, so without
# this check a half image would train beside its whole label.
JPEG_SOI, JPEG_EOI = b'\xff\xd8', b'\xff\xd9'
PNG_SIGNATURE, PNG_IEND = b'\x89PNG\r\n\x1a\n', b'\x00\x00\x00\x00IEND\xaeB`\x82'
PADDING = b'\x00\r\n\t '  # what some writers leave after the end marker
TAIL = 4096  # bytes read from a file's end: the marker and any padding


def cut_short(path):
    """'' if the JPEG or PNG file at `path` ends whole, else why it looks cut short (other formats:
    ''; the decoders judge them). Reads the file's first bytes and its last TAIL bytes; a JPEG
    whose end is not the marker (data appended after it, or a cut) is decoded to the end to decide."""
    with open(path, 'rb') as f:
        head = f.read(len(PNG_SIGNATURE))
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL))
        tail = f.read()
    if head.startswith(JPEG_SOI):
        if tail.rstrip(PADDING).endswith(JPEG_EOI):
            return ''
        try:  # PIL refuses a JPEG whose data ends early (unless ImageFile.LOAD_TRUNCATED_IMAGES is set)
            with Image.open(path) as image:
                image.load()
            return ''
        except Exception as exc:
            return f'cut short at {size} bytes: no JPEG end marker (FF D9) and the data ends early ({exc})'
    if head.startswith(PNG_SIGNATURE):
        if PNG_IEND in tail or (size > TAIL and PNG_IEND in Path(path).read_bytes()):
            return ''
        return f'cut short at {size} bytes: no PNG end chunk (IEND)'
    return ''


def check_pair(image_path, label_path, num_classes=ade20k.NUM_CLASSES):
    """'' if the pair is usable, else the reason. Both files must end whole (cut_short); decodes
    the label (the range needs its pixels) but only the image header."""
    for kind, path in (('image', image_path), ('label', label_path)):
        try:
            cut = cut_short(path)
        except OSError as exc:
            return f'unreadable {kind} {path}: {type(exc).__name__}: {exc}'
        if cut:
            return f'truncated {kind} {path}: {cut}'
    try:
        with Image.open(image_path) as image:
            image_size = image.size
            image.verify()
    except Exception as exc:
        return f'unreadable image {image_path}: {type(exc).__name__}: {exc}'
    try:
        with Image.open(label_path) as label_img:
            label = np.asarray(label_img)
    except Exception as exc:
        return f'unreadable label {label_path}: {type(exc).__name__}: {exc}'
    if label.ndim != 2:
        return f'label {label_path} has shape {label.shape}: expected a single-channel PNG'
    if (label.shape[1], label.shape[0]) != image_size:
        return f'label {label_path} is {label.shape[1]}x{label.shape[0]} but its image is {image_size[0]}x{image_size[1]}'
    top = int(label.max(initial=0))
    if top > num_classes:
        return f'label {label_path} holds value {top}: ADE20K labels are 0 (other) and 1..{num_classes}'
    return ''


# Part of each cache key: a result cached by an older check_pair, which found less, is not reused.
CHECK_VERSION = 2  # 2: files cut short (cut_short)


def _cache_file(root):
    return CACHE_DIR / (hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:16] + '.json')


def _stamp(path):
    st = path.stat()
    return f'{st.st_size}:{st.st_mtime_ns}'


def scan(root, splits=('train', 'val'), workers=None):
    """Check every pair of the splits; returns {split: [(index, image, label, reason), ...]} of bad
    samples, index being the position in the dataset's sorted file list (the loader's index)."""
    _layout(root)
    cache_path = _cache_file(root)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    bad, fresh = {}, {}
    for split in splits:
        pairs = _pairs(root, ade20k.SPLITS[split])
        keys = [f'v{CHECK_VERSION}|{img}|{_stamp(img)}|{_stamp(lbl)}' for img, lbl in pairs]
        todo = [i for i, key in enumerate(keys) if key not in cache]
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
            reasons = pool.map(lambda i: check_pair(*pairs[i]), todo)
            for i, reason in zip(todo, reasons):
                cache[keys[i]] = reason
        fresh.update({key: cache[key] for key in keys})
        bad[split] = [(i, str(img), str(lbl), fresh[key]) for i, ((img, lbl), key) in enumerate(zip(pairs, keys))
                      if fresh[key]]
    try:
        files.atomic_write(json.dumps(fresh), str(cache_path))
    except OSError:
        pass  # a read-only home: the check still ran, it just is not remembered
    return bad


def dataset(root, splits=('train', 'val')):
    """Raise SetupError naming the bad files, if any."""
    bad = scan(root, splits)
    problems = [(split, *entry) for split, entries in bad.items() for entry in entries]
    if problems:
        listed = '\n    '.join(f'{split}[{i}]: {reason}' for split, i, _, _, reason in problems[:MAX_LISTED])
        more = f'\n    ... and {len(problems) - MAX_LISTED} more' if len(problems) > MAX_LISTED else ''
        cut = ('files cut short are what an interrupted download or unzip leaves: download or unpack them '
               'again; otherwise ' if any(reason.startswith('truncated ') for *_, reason in problems) else '')
        raise SetupError(f'dataset {root}: {len(problems)} bad samples\n    {listed}{more}',
                         f'{cut}fix or remove these files, or leave them out with --skip-bad-samples '
                         '(the check is cached; it reruns only for changed files)')


def pairs(root, split):
    """(image, label) paths of 'train' or 'val', in the dataset's order."""
    return _pairs(root, ade20k.SPLITS[split])


# ---------------------------------------------------------------- the installation

def import_or_fail(module):
    """Import `module` or raise SetupError saying how to repair the install."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # any failure here means a broken install
        raise SetupError(f'cannot import {module}: {type(exc).__name__}: {exc}', REINSTALL) from exc


def mmcv_ops_status():
    """(has_compiled_ops, has_cuda_ops). Raises SetupError when mmcv's compiled `_ext` is missing."""
    import_or_fail('mmcv')
    try:
        from mmcv.ops import CrissCrossAttention, MultiScaleDeformableAttention, PSAMask  # noqa: F401
        ext = importlib.import_module('mmcv._ext')
    except Exception as exc:
        raise SetupError(
            f'mmcv has no compiled ops ({type(exc).__name__}: {exc}); mmseg 1.2.2 imports them at '
            'import time, so mmcv-lite or a mismatched build cannot work',
            REINSTALL + ' (it compiles mmcv 2.1.0 with MMCV_WITH_OPS=1)') from exc
    has_cuda = hasattr(ext, 'ms_deform_attn_forward') and _ext_built_with_cuda()
    return True, has_cuda


def _ext_built_with_cuda():
    try:
        from mmcv.ops.info import get_compiling_cuda_version
        version = get_compiling_cuda_version()
        return version not in ('not available', '', None)
    except Exception:
        return False


# Config types whose forward pass runs a compiled mmcv op on the GPU (on the CPU they fall back to
# PyTorch or to mmcv's CPU op): a mmcv built without CUDA ops fails them at the first iteration.
# CCNet's CCHead reaches mmcv.ops.CrissCrossAttention, which mmcv 2.1 writes in PyTorch (einsum): no
# CUDA op, so it is not listed; its import is checked with the others (mmcv_ops_status).
CUDA_OPS = {'PSAHead': 'PSAMask', 'mmdet.MSDeformAttnPixelDecoder': 'MultiScaleDeformableAttention',
            'mmdet.FocalLoss': 'sigmoid_focal_loss'}


def device(cfg):
    """Stop before anything is built when the machine has a GPU this torch cannot use, or when the
    model needs a CUDA op this mmcv was built without."""
    found = gpu.problem()
    if found:
        raise SetupError(*found)
    import torch
    needed = [op for kind, op in CUDA_OPS.items() if kind in config.types_in(cfg)]
    if torch.cuda.is_available() and needed and not mmcv_ops_status()[1]:
        import mmcv
        raise SetupError(f'this model runs mmcv\'s {", ".join(needed)} on the GPU, and mmcv {mmcv.__version__} '
                         'here was built without CUDA ops',
                         'run `bash setup.sh` on this GPU machine: it builds mmcv with CUDA ops, with the CUDA '
                         f'compiler from the package registry; or {gpu.CPU_CHOICE}')


def packages(cfg):
    """The packages the config's scoped types name (mmdet, mmpretrain) import."""
    for package in config.required_packages(cfg):
        try:
            importlib.import_module(f'{package}.models')
        except Exception as exc:
            raise SetupError(f'this model needs {package}, which does not import: {type(exc).__name__}: {exc}',
                             'run `bash setup.sh` (it installs the pinned mmdet and mmpretrain)') from exc


def trackers(tracker):
    """The packages of the trackers TRACKER names import (one error for all that do not)."""
    missing, fixes = [], []
    for name in validate.listed(tracker):
        module, fix = TRACKER_PACKAGES[name]
        try:
            importlib.import_module(module)
        except Exception as exc:
            missing.append(f'{module} ({type(exc).__name__}: {exc})')
            fixes += [fix] if fix not in fixes else []
    if missing:
        raise SetupError(f'--tracker {tracker} (TRACKER): cannot import {"; ".join(missing)}', '; '.join(fixes))


# ---------------------------------------------------------------- before a training run

def preflight(cfg, s):
    """Everything that can be checked before building: installation, pretrained files (there, or
    their stand-in under PRETRAINED auto, and of a layout that fits), checkpoints, the dataset.
    Raises SetupError."""
    mmcv_ops_status()
    packages(cfg)
    trackers(s.TRACKER)
    for path in config.pretrained_paths(cfg):
        used = pretrained.require(path, auto=getattr(s, 'PRETRAINED', None) == 'auto')
        if used != path:  # the same weights under our converted file's name (pretrained.SAME_WEIGHTS)
            config.replace_pretrained(cfg, path, used)
            if dist.rank_from_env() == 0:
                print(f'[{s.SCRIPT}] {pretrained.stand_in_note(path, used)}', flush=True)
    weights_fit.refuse_misfit(cfg, trust=s.trust_checkpoint)
    if s.load_from:
        checkpoints.load(s.load_from, trust=s.trust_checkpoint, what='--load-from checkpoint', mmap=True)
    if s.SKIP_BAD_SAMPLES:
        skip_bad_samples(cfg)
    elif dist.rank_from_env() == 0:
        dataset(cfg['train_dataloader']['dataset']['data_root'])


def skip_bad_samples(cfg):
    """Leave the samples the dataset check finds broken out of the train and val sets (by index,
    in the dataset's own sorted order) and say how many, instead of stopping."""
    from mmengine.logging import print_log
    root = cfg['train_dataloader']['dataset']['data_root']
    bad = scan(root)
    for split, loader in (('train', 'train_dataloader'), ('val', 'val_dataloader'), ('val', 'test_dataloader')):
        if not bad[split]:
            continue
        dataset_cfg = cfg[loader]['dataset']
        total = len(pairs(root, split))
        skipped = {index for index, *_ in bad[split]}
        dataset_cfg['indices'] = [i for i in range(total) if i not in skipped]
        if loader != 'test_dataloader':
            listed = '; '.join(f'{split}[{i}] {reason}' for i, _, _, reason in bad[split][:5])
            print_log(f'[data] skipping {len(skipped)} of {total} {split} samples (SKIP_BAD_SAMPLES): {listed}',
                      logger='current', level=30)
