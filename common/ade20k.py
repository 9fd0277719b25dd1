"""ADE20K (SceneParsing, ADEChallengeData2016) as MMSegmentation 1.2.2 trains on it.

Mirrors configs/_base_/datasets/ade20k.py: 150 classes, label 0 ("other") ignored through
reduce_zero_label, RandomResize to (4 x crop, crop) with ratio 0.5-2.0, RandomCrop with
cat_max_ratio 0.75, RandomFlip, PhotoMetricDistortion; whole-image test at (4 x crop, crop); IoUMetric.
Every function returns a fresh dict, so callers may change what they get.
"""
import os

DATA_ROOT = 'data/ade/ADEChallengeData2016'
NUM_CLASSES = 150
IGNORE_INDEX = 255           # label 0 ("other") becomes 255 under reduce_zero_label
SPLITS = dict(train='training', val='validation')
IMG_SUFFIX, SEG_SUFFIX = '.jpg', '.png'
# ImageNet statistics in RGB order, as every mmseg ADE20K model uses them.
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
TTA_RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def resize_scale(crop_size):
    """The reference (2048, 512) for a 512 crop: long edge 4x, short edge 1x the crop."""
    side = max(crop_size)
    return (4 * side, side)


def data_preprocessor(crop_size, **extra):
    return dict(type='SegDataPreProcessor', mean=list(MEAN), std=list(STD), bgr_to_rgb=True,
                pad_val=0, seg_pad_val=IGNORE_INDEX, size=tuple(crop_size), **extra)


def train_pipeline(crop_size, resize=None):
    """The official train pipeline; `resize` replaces its RandomResize (Mask2Former uses another)."""
    resize = resize or dict(type='RandomResize', scale=resize_scale(crop_size), ratio_range=(0.5, 2.0),
                            keep_ratio=True)
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        resize,
        dict(type='RandomCrop', crop_size=tuple(crop_size), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs'),
    ]


def shortest_edge_choice_resize(crop_size):
    """Mask2Former/MaskFormer's RandomChoiceResize: shortest edge 0.5..2.0 x crop in steps of 0.1."""
    side = max(crop_size)
    return dict(type='RandomChoiceResize', scales=[int(side * x * 0.1) for x in range(5, 21)],
                resize_type='ResizeShortestEdge', max_size=4 * side)


def test_pipeline(crop_size, extra=()):
    """Whole-image test: resize to (4 x crop, crop) keeping the ratio; labels are not resized."""
    return [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=resize_scale(crop_size), keep_ratio=True),
        *extra,
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]


def tta_pipeline(min_size=None):
    """Multi-scale (0.5..1.75) + flip test, as configs/_base_/datasets/ade20k.py defines it. With
    `min_size` (H, W), a view smaller than it is then enlarged (aspect kept) to cover it: the window
    of a backbone that takes no smaller input (BEiT, MAE: common/fixed_window.py)."""
    steps = [[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in TTA_RATIOS]]
    if min_size is not None:
        steps.append([dict(type='ResizeToAtLeast', size=tuple(min_size))])
    steps += [[dict(type='RandomFlip', prob=0., direction='horizontal'),
               dict(type='RandomFlip', prob=1., direction='horizontal')],
              [dict(type='LoadAnnotations')],
              [dict(type='PackSegInputs')]]
    return [dict(type='LoadImageFromFile', backend_args=None), dict(type='TestTimeAug', transforms=steps)]


def default_num_workers():
    """Dataloader workers per GPU process: the reference's 4, fewer on small machines."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    local_procs = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    return max(0, min(4, (cpus or 1) // local_procs - 1))


def dataset(data_root, split, pipeline):
    return dict(type='ADE20KDataset', data_root=data_root, reduce_zero_label=True,
                data_prefix=dict(img_path=f'images/{SPLITS[split]}', seg_map_path=f'annotations/{SPLITS[split]}'),
                pipeline=pipeline)


def dataloaders(data_root, crop_size, batch_per_gpu, num_workers=None, train_pipeline_=None,
                test_pipeline_=None):
    """train/val/test dataloaders and IoU evaluators, as the reference ade20k.py builds them."""
    workers = default_num_workers() if num_workers is None or num_workers < 0 else num_workers
    persistent = workers > 0

    def loader(split, pipeline, batch_size, sampler):
        return dict(batch_size=batch_size, num_workers=workers, persistent_workers=persistent,
                    sampler=sampler, dataset=dataset(data_root, split, pipeline))

    train = loader('train', train_pipeline_ or train_pipeline(crop_size), batch_per_gpu,
                   dict(type='InfiniteSampler', shuffle=True))
    val = loader('val', test_pipeline_ or test_pipeline(crop_size), 1, dict(type='DefaultSampler', shuffle=False))
    evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    return dict(train_dataloader=train, val_dataloader=val, test_dataloader=dict(val),
                val_evaluator=evaluator, test_evaluator=dict(evaluator))
