"""A small, learnable, deterministic dataset in the ADEChallengeData2016 layout.

    python -m common.demo_data OUT_DIR [--train 200] [--val 40] [--size 128x96] [--seed 0] [--all-classes]

writes OUT_DIR/ADEChallengeData2016/{images,annotations}/{training,validation}/ with JPEG images
(ADE_train_00000001.jpg...) and PNG labels in ADE20K's coding: 0 = other (ignored in training),
1..150 = the classes. Each scene is a background of one class with 1-3 rectangles and ellipses of
others; every class has its own colour and texture, so a network can learn it in minutes on a CPU,
while the shapes, sizes and textures vary enough that it must look at more than one pixel.
By default the scenes use 8 classes (DEMO_CLASSES); `--all-classes` (num_classes=150) draws from all
150 with a colour each, and `--size 683x512` gives ADE20K's typical image size: the GPU check's data
(tools/gpu_check/check.py).
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common import cli

# ADE20K class ids (1-based, as in the label PNGs) and a colour per class.
DEMO_CLASSES = {1: 'wall', 3: 'sky', 4: 'floor', 5: 'tree', 7: 'road', 10: 'grass', 22: 'water', 13: 'person'}
_COLOURS = {1: (200, 190, 170), 3: (110, 160, 235), 4: (140, 90, 50), 5: (30, 110, 40),
            7: (90, 90, 95), 10: (110, 200, 70), 22: (30, 60, 150), 13: (230, 60, 60)}
_OTHER_COLOUR = (250, 250, 250)  # label 0: "other", ignored by training and evaluation


def colours(num_classes=None):
    """{ADE id: RGB} of the classes scenes are drawn from: the 8 demo classes (None), or ids
    1..num_classes, the demo ones in their colours and the others in fixed random ones."""
    if num_classes is None:
        return dict(_COLOURS)
    drawn = np.random.default_rng(150).integers(20, 236, (num_classes, 3))
    return {cls: _COLOURS.get(cls, tuple(int(v) for v in drawn[cls - 1])) for cls in range(1, num_classes + 1)}


def _texture(rng, cls, shape, palette=_COLOURS):
    """Per-class texture: stripes at a class-specific frequency, plus noise."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    freq = 0.15 + 0.08 * (list(palette).index(cls) % 4)
    stripes = 12 * np.sin(freq * (xx + (cls % 3) * yy) + rng.uniform(0, 6.28))
    return stripes[..., None] + rng.normal(0, 6, (h, w, 3))


def make_sample(rng, width, height, palette=_COLOURS):
    """One (RGB image uint8 HxWx3, label uint8 HxW) pair; `palette`: colours()."""
    classes = list(palette)
    label = np.full((height, width), rng.choice(classes), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cls = 0 if rng.random() < 0.1 else rng.choice(classes)
        mask_img = Image.new('L', (width, height), 0)
        w = rng.integers(width // 4, width // 2 + 1)
        h = rng.integers(height // 4, height // 2 + 1)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        draw = ImageDraw.Draw(mask_img)
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x0 + w, y0 + h], fill=1)
        label[np.asarray(mask_img, bool)] = cls
    image = np.zeros((height, width, 3), np.float32)
    for cls in np.unique(label):
        region = label == cls
        colour = np.array(_OTHER_COLOUR if cls == 0 else palette[cls], np.float32)
        brightness = rng.uniform(0.85, 1.15)
        texture_class = int(cls) if cls else classes[0]  # "other" takes the first class's texture
        image[region] = (colour * brightness + _texture(rng, texture_class, label.shape, palette))[region]
    return np.clip(image, 0, 255).astype(np.uint8), label


def write(out_dir, n_train=200, n_val=40, size=(128, 96), seed=0, num_classes=None):
    """Write the dataset (`size`: width, height, or a list of them that the images of each split take
    in turn; `num_classes`: colours()); returns the ADEChallengeData2016 root. Same arguments, same bytes."""
    sizes = size if isinstance(size, list) else [size]
    root = Path(out_dir) / 'ADEChallengeData2016'
    rng = np.random.default_rng(seed)
    palette = colours(num_classes)
    for split, count, prefix in (('training', n_train, 'ADE_train'), ('validation', n_val, 'ADE_val')):
        img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            image, label = make_sample(rng, *sizes[(i - 1) % len(sizes)], palette)
            Image.fromarray(image).save(img_dir / f'{prefix}_{i:08d}.jpg', quality=95)
            Image.fromarray(label).save(ann_dir / f'{prefix}_{i:08d}.png')
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_dir')
    parser.add_argument('--train', type=int, default=200, help='training images')
    parser.add_argument('--val', type=int, default=40, help='validation images')
    parser.add_argument('--size', default='128x96', help='WIDTHxHEIGHT')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--all-classes', action='store_true', help='draw from all 150 classes (default: 8)')
    args = parser.parse_args(argv)
    width, height = cli.parse_size(args.size)  # in the flag's order: WIDTHxHEIGHT
    root = write(args.out_dir, args.train, args.val, (width, height), args.seed,
                 150 if args.all_classes else None)
    print(f'wrote {args.train} training and {args.val} validation images to {root}')


if __name__ == '__main__':
    main()
