"""Evaluation in batches of images that share their resized shape: no image padded by another's size.

After the test resize (short side 512, aspect kept) many ADE20K validation images have the same
shape (every 4:3 landscape photo becomes 683x512). SameShapeBatchSampler groups each process's
validation images by that shape into batches of up to EVAL_BATCH, so a batch is exactly what batch 1
would compute, image by image, apart from float rounding; whole-image and sliding-window inference
both take a batch. The shapes come from the image headers and the pipeline's Resize (mmcv's own
rescale arithmetic); without a Resize, images are grouped by their own size.

Several processes: each takes its share of the dataset as mmengine's DefaultSampler gives it, every
process makes the same number of batches (the rank that would make fewer splits its largest ones:
the evaluation loop of every rank must run the same number of steps), and each rank's last image,
the one DefaultSampler may have repeated to even out the ranks, comes last in its own batch, so
mmengine's collection drops exactly the repeats, as with batch 1.
"""
import copy

from mmengine.registry import DATA_SAMPLERS

# EVAL_BATCH 0 (the default) picks by the device. On a CPU batching buys nothing and 8 costs about
# 45% (benchmarks/cpu_eval_batch: FCN and SegFormer, ADE20K's size mix, batch 4 0.97-0.99x, 8 0.53-0.58x
# of batch 1): one at a time there. On a GPU, at batch 1 the host's launches are the limit (SegFormer-B0
# trains 3.5x faster per image at batch 16 than at 2 on an H100, stock MMSegmentation measured): 8; the GPU
# check's eval_batch stage measures it.
GPU_EVAL_BATCH = 8


def size(setting, cuda):
    """The batch EVAL_BATCH means on this device: itself, or for 0 GPU_EVAL_BATCH on a GPU and 1 on a CPU."""
    return setting if setting > 0 else (GPU_EVAL_BATCH if cuda else 1)


def _header_size(path):
    from PIL import Image
    with Image.open(path) as image:
        return image.size  # (w, h), from the header only


def resized_shape(size, pipeline):
    """(h, w) an image of `size` (w, h) has after the pipeline's keep-ratio Resize; (h, w) itself
    when the pipeline has none it can follow."""
    import mmcv
    for step in pipeline or []:
        kind = step.get('type') if isinstance(step, dict) else type(step).__name__
        if kind == 'Resize' and step.get('keep_ratio') and step.get('scale') is not None:
            w, h = mmcv.rescale_size(size, tuple(step['scale']))
            return h, w
        if kind in ('Resize', 'RandomResize', 'TestTimeAug'):
            break  # a rule not followed here: group by the image's own size (still exact)
    return size[1], size[0]


def _rank_indices(sampler, rank):
    other = copy.copy(sampler)
    other.rank = rank
    return list(iter(other))


def _group(indices, shapes, batch_size):
    """Batches of equal-shape positions, in order of first appearance; the last index alone last."""
    head, tail = indices[:-1], indices[-1:]
    groups = {}
    for index in head:
        groups.setdefault(shapes[index], []).append(index)
    batches = [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]
    return batches + ([tail] if tail else [])


def _split_to(batches, count):
    """Split the largest batches until there are `count` (each keeps its images' shape)."""
    batches = [list(b) for b in batches]
    while len(batches) < count:
        largest = max(range(len(batches) - 1 or 1), key=lambda i: len(batches[i]))
        batch = batches[largest]
        if len(batch) < 2:
            raise ValueError('cannot make more batches than images')
        batches[largest:largest + 1] = [batch[:len(batch) // 2], batch[len(batch) // 2:]]
    return batches


@DATA_SAMPLERS.register_module(force=True)
class SameShapeBatchSampler:
    """Batches of up to `batch_size` validation images with the same resized shape (see above)."""

    def __init__(self, sampler, batch_size, pipeline=None):
        dataset = sampler.dataset
        self.sampler, self.batch_size = sampler, batch_size
        shapes = {}
        world = getattr(sampler, 'world_size', 1)
        ranks = [_rank_indices(sampler, r) for r in range(world)] if world > 1 else [list(iter(sampler))]
        for index in {i for part in ranks for i in part}:
            shapes[index] = resized_shape(_header_size(dataset.get_data_info(index)['img_path']), pipeline)
        per_rank = [_group(part, shapes, batch_size) for part in ranks]
        count = max(len(b) for b in per_rank)
        mine = per_rank[getattr(sampler, 'rank', 0) if world > 1 else 0]
        self.batches = _split_to(mine, count)

    def __iter__(self):
        return iter([list(b) for b in self.batches])

    def __len__(self):
        return len(self.batches)


def batched(loader_cfg, eval_batch):
    """The val/test dataloader config with batches of `eval_batch` same-shape images (1: as is)."""
    if eval_batch <= 1:
        return loader_cfg
    pipeline = loader_cfg['dataset'].get('pipeline')
    return dict(loader_cfg, batch_size=eval_batch,
                batch_sampler=dict(type='SameShapeBatchSampler', pipeline=copy.deepcopy(pipeline)))
