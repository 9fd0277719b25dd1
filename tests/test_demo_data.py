"""The demo dataset: ADE20K layout and coding, deterministic, valid for the dataset check."""
import hashlib

import numpy as np
from PIL import Image

from common import checks, demo_data


def tree_digest(root):
    return hashlib.sha256(b''.join(p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file())).hexdigest()


def test_layout_coding_and_determinism(tmp_path):
    a = demo_data.write(tmp_path / 'a', n_train=5, n_val=2)
    b = demo_data.write(tmp_path / 'b', n_train=5, n_val=2)
    assert tree_digest(a) == tree_digest(b)
    assert sorted(p.name for p in (a / 'images' / 'training').iterdir())[0] == 'ADE_train_00000001.jpg'
    assert (a / 'annotations' / 'validation' / 'ADE_val_00000002.png').is_file()
    labels = np.concatenate([np.array(Image.open(p)).ravel() for p in (a / 'annotations').rglob('*.png')])
    assert labels.max() <= 150 and set(np.unique(labels)) <= {0, *demo_data.DEMO_CLASSES}
    with Image.open(a / 'images' / 'training' / 'ADE_train_00000001.jpg') as image:
        assert image.format == 'JPEG' and image.mode == 'RGB' and image.size == (128, 96)
    assert checks.scan(a) == {'train': [], 'val': []}
