"""The speed levers (common/speed.py) on CPU: what a run chooses, that the fast path trains and
evaluates for real (bf16 autocast and channels_last run on a CPU too), and that ops without bf16
kernels stay in fp32. GPU speed itself is measured on a GPU machine (benchmarks/README.md); the
commands that measure it are tested in tests/test_bench.py."""
import copy
import json
import types

import pytest
import torch

from conftest import TINY, load_script
from common import kernel_guard, speed
from common.errors import SetupError


def settings(**overrides):
    base = dict(PRECISION='auto', CHANNELS_LAST='auto', TF32=True, FUSED_OPTIMIZER='auto', COMPILE=False)
    return types.SimpleNamespace(**{**base, **overrides})


def test_auto_is_fp32_on_a_cpu_and_bf16_on_a_modern_gpu():
    assert speed.plan(settings(), cuda=False) == dict(precision='fp32', channels_last=False, tf32=False,
                                                      fused_optimizer=False, compile=False, cudnn_benchmark=True,
                                                      activation_ckpt=False)
    gpu = speed.plan(settings(), cuda=True, bf16_supported=True)
    assert gpu == dict(precision='bf16', channels_last=True, tf32=True, fused_optimizer=True, compile=False,
                       cudnn_benchmark=True, activation_ckpt=False)
    assert speed.plan(settings(), cuda=True, bf16_supported=False)['precision'] == 'fp16'  # pre-Ampere
    assert speed.plan(settings(PRECISION='fp32', CHANNELS_LAST='off'), cuda=True)['channels_last'] is False
    assert speed.plan(settings(PRECISION='bf16', CHANNELS_LAST='on'), cuda=False)['precision'] == 'bf16'


@pytest.mark.parametrize('bad', [dict(PRECISION='half'), dict(CHANNELS_LAST='maybe')])
def test_bad_speed_settings_are_one_clear_error(bad):
    with pytest.raises(SetupError) as err:
        speed.plan(settings(**bad), cuda=False)
    assert '--precision' in err.value.fix or '--channels-last' in err.value.fix


def test_gpu_plan_rewrites_the_run_config_not_the_recipe(tmp_path):
    module = load_script('train_pspnet')
    from common import cli
    recipe = module.build_config(cli.parse(vars(module), []))
    cfg = speed.apply(copy.deepcopy(recipe), speed.plan(settings(), cuda=True, bf16_supported=True), cuda=True)
    assert cfg['optim_wrapper']['type'] == 'AutocastOptimWrapper' and cfg['optim_wrapper']['dtype'] == 'bfloat16'
    assert cfg['optim_wrapper']['optimizer'] == dict(recipe['optim_wrapper']['optimizer'], fused=True)
    assert cfg['val_cfg'] == dict(type='AutocastValLoop', dtype='bfloat16')
    assert cfg['test_cfg'] == dict(type='AutocastTestLoop', dtype='bfloat16')
    assert all(cfg[k]['pin_memory'] for k in ('train_dataloader', 'val_dataloader', 'test_dataloader'))
    assert 'common.speed' in cfg['custom_imports']['imports']
    assert recipe['optim_wrapper']['type'] == 'OptimWrapper'  # apply() works on the run's copy
    fp16 = speed.apply(copy.deepcopy(recipe), speed.plan(settings(PRECISION='fp16'), cuda=True), cuda=True)
    assert fp16['optim_wrapper']['type'] == 'ScaledAutocastOptimWrapper' and fp16['optim_wrapper']['loss_scale'] == 'dynamic'
    # fp16 runs on a CPU too (torch.amp.GradScaler for the parameters' device): tested there.
    assert speed.plan(settings(PRECISION='fp16'), cuda=False)['precision'] == 'fp16'
    # The recipe's fp16 (PoolFormer) becomes plain fp32 on a CPU, where mmengine's loss scaler cannot run.
    poolformer = load_script('train_poolformer')
    pool_recipe = poolformer.build_config(cli.parse(vars(poolformer), []))
    assert pool_recipe['optim_wrapper']['type'] == 'AmpOptimWrapper'
    on_cpu = speed.apply(copy.deepcopy(pool_recipe), speed.plan(settings(), cuda=False), cuda=False)
    assert on_cpu['optim_wrapper']['type'] == 'GuardedOptimWrapper' and 'loss_scale' not in on_cpu['optim_wrapper']


def test_autocast_wrapper_runs_the_forward_in_bf16_and_steps_fp32_weights():
    from mmengine.optim import build_optim_wrapper
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    wrapper = build_optim_wrapper(model, dict(type='AutocastOptimWrapper', dtype='bfloat16',
                                              optimizer=dict(type='SGD', lr=0.1)))
    before = model[0].weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 3, 8, 8))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().square().mean())
    assert model[0].weight.dtype == torch.float32 and not torch.equal(model[0].weight, before)


def test_deformable_attention_stays_fp32_under_bf16_autocast():
    """mmcv's MultiScaleDeformableAttention (Mask2Former's pixel decoder) has no bf16 CUDA kernel:
    under bf16 autocast it runs in fp32 (the kernel guard every run puts on the model), and gives
    exactly the fp32 result."""
    from mmcv.ops import MultiScaleDeformableAttention
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=2, num_points=2,
                                         batch_first=True).eval()  # eval: no dropout
    assert kernel_guard.guard_kernels(attn) == ['']  # the module itself
    shapes = torch.tensor([[8, 8], [4, 4]])
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    length = int((shapes[:, 0] * shapes[:, 1]).sum())
    query = torch.randn(1, length, 32)
    ref = torch.rand(1, length, 2, 2)
    args = dict(query=query, value=query, reference_points=ref, spatial_shapes=shapes, level_start_index=start)
    fp32 = attn(**args)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mixed = attn(**{k: (v.bfloat16() if k in ('query', 'value') else v) for k, v in args.items()})
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, attn(**{**args, 'query': query.bfloat16().float(),
                                              'value': query.bfloat16().float()}))
    assert torch.allclose(mixed, fp32, atol=0.05)


@pytest.mark.slow
def test_bf16_channels_last_training_and_evaluation_on_cpu(tiny_data, tmp_path):
    """The GPU's default path (bf16 autocast + channels_last) trains, evaluates and reports itself;
    its evaluation of the same checkpoint matches fp32's."""
    module = load_script('train_fcn')
    work = tmp_path / 'bf16'
    flags = ['--data-root', tiny_data, *TINY, '--precision', 'bf16', '--channels-last', 'on']
    module.main(flags + ['--work-dir', str(work), '--max-iters', '2', '--val-interval', '2'])
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['precision'] == 'bf16' and summary['amp'] is True
    assert summary['speed']['channels_last'] is True and summary['mIoU'] is not None
    assert 0 < summary['startup_s'] < summary['wall_s'] + 120
    losses = [json.loads(line)['loss'] for line in next(work.rglob('scalars.json')).read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 2 and all(map(lambda v: v == v and abs(v) < 1e4, losses))

    results = {}
    for precision in ('bf16', 'fp32'):
        out = tmp_path / f'eval_{precision}'
        module.main(flags + ['--work-dir', str(work), '--precision', precision,
                             '--eval-only', str(work / 'iter_2.pth'), '--out', str(out)])
        results[precision] = json.loads((out / 'metrics.json').read_text())
    assert results['bf16']['precision'] == 'bf16' and results['fp32']['precision'] == 'fp32'
    # A 2-iteration model sits near its decision boundaries; the 0.1-point criterion is checked on a
    # trained one (benchmarks/README.md, CPU parity). Here: same scale, nothing broken.
    assert abs(results['bf16']['aAcc'] - results['fp32']['aAcc']) <= 2.0


@pytest.mark.slow
def test_compile_trains_and_keeps_checkpoint_keys(tiny_data, tmp_path, monkeypatch):
    """COMPILE compiles the backbone in place: training runs, and the checkpoint's keys are the eager
    model's (no `_orig_mod.`), so compiled and eager runs resume from each other's checkpoints.
    Backend aot_eager: dynamo's capture and autograd's tracing, without inductor's minutes of code
    generation on 2 cores (common/speed.py COMPILE_BACKEND)."""
    from common import speed
    monkeypatch.setattr(speed, 'COMPILE_BACKEND', 'aot_eager')
    module = load_script('train_segformer')
    work = tmp_path / 'compiled'
    module.main(['--data-root', tiny_data, *TINY, '--compile', '--work-dir', str(work), '--max-iters', '2',
                 '--val-interval', '2'])
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['speed']['compile'] is True
    keys = set(torch.load(work / 'iter_2.pth', map_location='cpu', weights_only=False)['state_dict'])
    assert 'backbone.layers.0.0.projection.weight' in keys and not any('_orig_mod' in k for k in keys)
    module.main(['--data-root', tiny_data, *TINY, '--work-dir', str(work), '--max-iters', '3',
                 '--val-interval', '3'])  # eager, resuming the compiled run
    assert json.loads((work / 'summary.json').read_text())['start_iter'] == 2
