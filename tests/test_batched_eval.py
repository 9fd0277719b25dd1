"""Evaluation in batches of same-shape images gives batch 1's predictions and mIoU: on the demo data
(one size) and on a set of mixed sizes, for whole-image and sliding-window models, and on several
processes each takes its share with the same number of batches and nothing counted twice."""
import copy

import numpy as np
import pytest
import torch

from conftest import TINY, load_script

# Landscape, portrait and square images (w, h), taken in turn: after the test resize they fall into
# three shapes, as ADE20K's photos fall into a few.
MIXED = [(96, 72), (72, 96), (96, 72), (80, 80), (96, 72), (72, 96), (96, 72)]


@pytest.fixture(scope='module')
def mixed_data(tmp_path_factory):
    from common import demo_data
    return str(demo_data.write(tmp_path_factory.mktemp('mixed'), n_train=4, n_val=len(MIXED), size=MIXED))


def test_the_resized_shape_follows_the_test_resize():
    from common import ade20k, batched_eval
    pipeline = ade20k.test_pipeline((512, 512))
    assert batched_eval.resized_shape((640, 480), pipeline) == (512, 683)   # 4:3 landscape -> 683x512
    assert batched_eval.resized_shape((480, 640), pipeline) == (683, 512)
    assert batched_eval.resized_shape((640, 480), [dict(type='LoadImageFromFile')]) == (480, 640)


def _sampler(data_root, world=1, rank=0, batch=4, pipeline=None):
    from mmengine.dataset import DefaultSampler
    from mmseg.datasets import ADE20KDataset
    from common import ade20k, batched_eval
    pipeline = pipeline or ade20k.test_pipeline((64, 64))
    dataset = ADE20KDataset(data_root=data_root, reduce_zero_label=True, lazy_init=False,
                            data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                            pipeline=[])
    sampler = DefaultSampler(dataset, shuffle=False)
    sampler.rank, sampler.world_size = rank, world
    sampler.num_samples = -(-len(dataset) // world)
    sampler.total_size = sampler.num_samples * world
    return batched_eval.SameShapeBatchSampler(sampler, batch, pipeline), dataset


def test_batches_hold_one_shape_and_every_image_once(mixed_data):
    from common import ade20k, batched_eval
    batches, dataset = _sampler(mixed_data)
    pipeline = ade20k.test_pipeline((64, 64))
    seen = [i for b in batches for i in b]
    assert sorted(seen) == list(range(len(MIXED))) and len(batches) < len(MIXED)
    for batch in batches:
        shapes = {batched_eval.resized_shape(MIXED[i], pipeline) for i in batch}
        assert len(shapes) == 1 and len(batch) <= 4
    assert list(batches)[-1] == [len(MIXED) - 1], 'the last image comes last, alone'


@pytest.mark.parametrize('world', [2, 3])
def test_several_ranks_make_as_many_batches_and_collection_counts_each_image_once(mixed_data, world):
    from mmengine.dist import collect_results
    ranks = [list(_sampler(mixed_data, world, rank)[0]) for rank in range(world)]
    assert len({len(b) for b in ranks}) == 1, 'every rank runs as many evaluation steps'
    parts = [[i for b in batches for i in b] for batches in ranks]
    # mmengine's collect_results_cpu: interleave the ranks' results, keep the dataset's size.
    ordered = [i for row in zip(*parts) for i in row][:len(MIXED)]
    assert sorted(ordered) == list(range(len(MIXED))), ordered
    assert collect_results  # the function whose arithmetic the line above repeats


def _predictions(name, data_root, eval_batch, extra=()):
    """{image: predicted labels} and the mIoU of one random-weights model at EVAL_BATCH."""
    from mmengine.runner import Runner
    from common import batched_eval, cli, infer  # noqa: F401  (registers the samplers)
    from common.infer.model import build
    from mmengine.registry import METRICS
    module = load_script(name)
    s = cli.parse(vars(module), ['--data-root', data_root, *TINY, '--eval-batch', str(eval_batch), *extra,
                                 *getattr(module, 'SMOKE_TEST_FLAGS', [])])
    cfg = module.build_config(s)
    torch.manual_seed(0)
    model = build(cfg["model"], on="cpu")
    loader = Runner.build_dataloader(batched_eval.batched(copy.deepcopy(cfg['test_dataloader']), eval_batch))
    metric = METRICS.build(copy.deepcopy(cfg['test_evaluator']))
    metric.dataset_meta = loader.dataset.metainfo
    found = {}
    with torch.no_grad():
        for batch in loader:
            outputs = model.test_step(batch)
            metric.process(batch, [o.to_dict() for o in outputs])
            for o in outputs:
                found[o.img_path] = o.pred_sem_seg.data[0].numpy()
    return found, metric.compute_metrics(metric.results)['mIoU']


@pytest.mark.slow
@pytest.mark.parametrize('name', ['train_fcn', 'train_segmenter'])   # whole image; sliding window
@pytest.mark.parametrize('data', ['tiny_data', 'mixed_data'])
def test_batched_predictions_equal_batch_one(name, data, request):
    root = request.getfixturevalue(data)
    one, miou_one = _predictions(name, root, 1)
    many, miou_many = _predictions(name, root, 4)
    assert set(one) == set(many)
    agree = sum((one[k] == many[k]).sum() for k in one) / sum(one[k].size for k in one)
    assert agree >= 0.9999, f'{name}: {agree:.6f} of pixels agree'
    assert abs(miou_one - miou_many) <= 0.01


def test_eval_batch_zero_picks_by_the_device():
    """EVAL_BATCH 0 (the default): batches of GPU_EVAL_BATCH on a GPU, one at a time on a CPU, where
    batching was measured slower (benchmarks/cpu_eval_batch); any other value is itself."""
    from common import batched_eval, cli
    assert cli.COMMON_SETTINGS['EVAL_BATCH'][0] == 0
    assert batched_eval.size(0, cuda=True) == batched_eval.GPU_EVAL_BATCH == 8
    assert batched_eval.size(0, cuda=False) == 1
    assert batched_eval.size(4, cuda=False) == batched_eval.size(4, cuda=True) == 4


@pytest.mark.slow
def test_a_training_run_evaluates_in_the_batches_asked_for(tiny_data):
    """train.prepare gives the run's val and test loaders the same-shape batches of --eval-batch."""
    from common import cli, speed, train
    module = load_script('train_fcn')
    for flag, expected in (('0', None), ('4', 4)):
        s = cli.parse(vars(module), ['--data-root', tiny_data, *TINY, '--eval-batch', flag])
        cfg = module.build_config(s)
        train.prepare(cfg, s, speed.plan(s, cuda=False))
        for loader in ('val_dataloader', 'test_dataloader'):
            sampler = cfg[loader].get('batch_sampler')
            assert (sampler and sampler['type'], cfg[loader].get('batch_size')) == \
                (('SameShapeBatchSampler', 4) if expected else (None, 1)), (flag, loader)
