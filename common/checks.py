"""Preflight: find what would break a run before anything is built or a GPU is touched.

`dataset(root)` checks the ADEChallengeData2016 layout, that every image has a label and back,
that each file opens, that image and label sizes agree, and that labels hold only 0..150. Results
are cached per file (path, size, mtime), so the 25k-file ADE20K check costs its time once.
"""
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common import ade20k
from common.errors import SetupError

CACHE_DIR = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'ade20k-train' / 'dataset-checks'
DOWNLOAD_HINT = ('download ADE20K with `python -m common.download_ade20k` (it unpacks to data/ade/), '
                 'point --data-root at your ADEChallengeData2016 folder, or try --demo')
MAX_LISTED = 5


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


def check_pair(image_path, label_path, num_classes=ade20k.NUM_CLASSES):
    """'' if the pair is usable, else the reason. Decodes the label (the range needs its pixels)
    but only the image header."""
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
        keys = [f'{img}|{_stamp(img)}|{_stamp(lbl)}' for img, lbl in pairs]
        todo = [i for i, key in enumerate(keys) if key not in cache]
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
            reasons = pool.map(lambda i: check_pair(*pairs[i]), todo)
            for i, reason in zip(todo, reasons):
                cache[keys[i]] = reason
        fresh.update({key: cache[key] for key in keys})
        bad[split] = [(i, str(img), str(lbl), fresh[key]) for i, ((img, lbl), key) in enumerate(zip(pairs, keys))
                      if fresh[key]]
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix('.tmp')
        tmp.write_text(json.dumps(fresh))
        os.replace(tmp, cache_path)
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
        raise SetupError(f'dataset {root}: {len(problems)} bad samples\n    {listed}{more}',
                         'fix or remove these files (the check is cached; it reruns only for changed files)')


def pairs(root, split):
    """(image, label) paths of 'train' or 'val', in the dataset's order."""
    return _pairs(root, ade20k.SPLITS[split])
