"""--activation-ckpt: the backbone's blocks recompute their activations in the backward pass. The same
seed trains to bit-identical losses and weights with and without it (fp32, CPU), the checkpointing
really runs, it trains under bf16, and a backbone without it is refused before anything is built."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SCRIPTS, TINY, load_script
from common import activation_ckpt, cli


@pytest.fixture(autouse=True)
def _no_logger_left():
    """Building a model outside a run makes mmengine's logger, whose handler keeps this test's captured
    stdout: print_log in later tests would write there. Drop the loggers a test made."""
    from mmengine.logging import MMLogger
    before = set(MMLogger._instance_dict)
    yield
    for name in set(MMLogger._instance_dict) - before:
        del MMLogger._instance_dict[name]


def config_of(name, *flags):
    module = load_script(name)
    s = cli.parse(vars(module), ['--no-pretrained', *flags])
    return activation_ckpt.apply(module.build_config(s), s.ACTIVATION_CKPT, s.SCRIPT)


class Calls:
    """Counts torch.utils.checkpoint.checkpoint's calls (the wrapped blocks look it up when wrapped)."""

    def __init__(self, monkeypatch):
        import torch.utils.checkpoint as cp
        self.count = 0
        stock = cp.checkpoint

        def counted(*args, **kwargs):
            self.count += 1
            return stock(*args, **kwargs)
        monkeypatch.setattr(cp, 'checkpoint', counted)


def train(name, data, work, *flags, iters=2):
    """Losses (as logged) and final weights of a tiny run of the script from seed 0."""
    load_script(name).main(['--data-root', data, '--work-dir', str(work), *TINY, '--max-iters', str(iters),
                            '--val-interval', '100', '--seed', '0', *flags])
    logged = [json.loads(line) for line in next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    losses = [(row['step'], row['loss']) for row in logged if 'loss' in row]
    weights = torch.load(work / f'iter_{iters}.pth', map_location='cpu', weights_only=False)['state_dict']
    return losses, weights


def steps(name, flags, on, iters=2, crop=64, bf16=False):
    """The script's model (from scratch, BN for SyncBN as on a CPU) and its recipe's optimizer: the
    exact losses of `iters` training steps on a fixed random batch from seed 0, and the state_dict."""
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from common import config
    module = load_script(name)
    s = cli.parse(vars(module), ['--no-pretrained', '--crop-size', str(crop), *flags] + (['--activation-ckpt'] if on else []))
    cfg = config.sync_bn_to_bn(activation_ckpt.apply(module.build_config(s), s.ACTIVATION_CKPT, s.SCRIPT))
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(cfg['model']))
    model.init_weights()
    if bf16:  # as a GPU run by default: NHWC, bf16 autocast (common.speed)
        model = model.to(memory_format=torch.channels_last)
    wrapped = activation_ckpt.install(model, cfg[activation_ckpt.KEY]) if on else 0
    wrapper = {k: v for k, v in cfg['optim_wrapper'].items() if k not in ('loss_scale', 'dtype')}
    kind = dict(type='AutocastOptimWrapper', dtype='bfloat16') if bf16 else dict(type='OptimWrapper')
    optim = build_optim_wrapper(model, ConfigDict(wrapper, **kind))
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(crop, crop), pad_shape=(crop, crop), ori_shape=(crop, crop)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, crop, crop), generator=generator))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 256, (3, crop, crop), generator=generator, dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    model.train()
    losses = [float(model.train_step(data, optim)['loss']) for _ in range(iters)]
    return losses, model.state_dict(), wrapped


def assert_same_weights(name, weights, plain_weights):
    assert weights.keys() == plain_weights.keys()
    different = [key for key in weights if not torch.equal(weights[key], plain_weights[key])]
    assert not different, f'{name}: weights or buffers differ after training: {different[:5]}'


# Two transformer families (MiT, ViT: drop path's RNG in the recomputation) and PoolFormer, whose frozen
# patch embedding feeds its first block no grad; a ResNet (BatchNorm in the blocks) is the whole-run test
# below. (Swin and BEiT take minutes here; test_each_kind_of_backbone_has_its_blocks_wrapped finds theirs.)
CASES = {'train_segformer': [], 'train_segmenter': [], 'train_poolformer': []}


@pytest.mark.slow  # trains
@pytest.mark.parametrize('name', list(CASES))
def test_the_same_seed_trains_bit_identically_with_and_without_it(name, monkeypatch):
    plain_losses, plain_weights, _ = steps(name, CASES[name], on=False)
    calls = Calls(monkeypatch)
    losses, weights, wrapped = steps(name, CASES[name], on=True)
    assert wrapped > 0 and calls.count >= 2 * wrapped, f'{name}: {wrapped} blocks, {calls.count} checkpoint calls'
    assert losses == plain_losses  # ==: bit-identical, not close
    assert_same_weights(name, weights, plain_weights)


@pytest.mark.slow
def test_a_run_with_the_flag_trains_bit_identically(tiny_data, tmp_path, monkeypatch, capsys):
    """The whole run: the flag, the config, the Runner wrapping the model; the banner says it."""
    plain_losses, plain_weights = train('train_fcn', tiny_data, tmp_path / 'plain', '--backbone', 'r18-d8')
    calls = Calls(monkeypatch)
    losses, weights = train('train_fcn', tiny_data, tmp_path / 'ckpt', '--backbone', 'r18-d8', '--activation-ckpt')
    assert calls.count >= 2 * 8  # ResNet-18: 8 blocks, 2 steps
    assert losses == plain_losses and len(losses) == 2
    assert_same_weights('train_fcn', weights, plain_weights)
    out = capsys.readouterr().out
    assert 'activation_ckpt' in out.split('speed:')[-1].splitlines()[0]  # the speed line
    assert 'activation checkpointing: every BasicBlock, Bottleneck of the ResNetV1c backbone' in out


@pytest.mark.slow
def test_it_trains_under_bf16_and_channels_last(monkeypatch):
    """The recomputation runs under the forward's autocast state (torch.utils.checkpoint keeps it)."""
    calls = Calls(monkeypatch)
    losses, _, wrapped = steps('train_segformer', [], on=True, bf16=True)
    assert calls.count >= 2 * wrapped > 0
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses)


def test_reentrant_checkpoint_of_an_input_without_grad_trains_nothing():
    """One reason the run does not use mmengine's activation_checkpointing: its wrapper calls torch's
    reentrant checkpoint, which gives a block fed by frozen layers no gradient."""
    from torch.utils.checkpoint import checkpoint
    block = torch.nn.Linear(4, 4)
    frozen_output = torch.randn(2, 4)  # what a frozen stem hands on: requires_grad False
    with pytest.warns(UserWarning, match='use_reentrant'):
        out = checkpoint(block, frozen_output)
    assert not out.requires_grad  # nothing to backpropagate: block.weight.grad stays None
    checkpoint(block, frozen_output, use_reentrant=False).sum().backward()
    assert block.weight.grad is not None


def resnet18(**kwargs):
    from mmseg.models.backbones import ResNetV1c
    torch.manual_seed(0)
    return ResNetV1c(depth=18, norm_cfg=dict(type='BN'), **kwargs)


def one_step(model, x):
    model.train()
    sum(out.pow(2).mean() for out in model(x)).backward()
    return {name: p.grad for name, p in model.named_parameters()}, {n: b.clone() for n, b in model.named_buffers()}


def test_mmseg_with_cp_updates_bn_statistics_twice_and_this_does_not():
    """The other reason, and the backbones' own with_cp too: reentrant recomputation runs each BN again."""
    x = torch.randn(2, 3, 64, 64)
    grads, buffers = one_step(resnet18(), x)
    with pytest.warns(UserWarning, match='use_reentrant'):
        _, with_cp_buffers = one_step(resnet18(with_cp=True), x)
    assert with_cp_buffers['layer1.0.bn1.num_batches_tracked'] == 2  # two updates in one step
    model = resnet18()
    assert activation_ckpt.install(model, dict(module='', blocks=activation_ckpt.BLOCKS['ResNetV1c'])) == 8
    ckpt_grads, ckpt_buffers = one_step(model, x)
    assert all(torch.equal(ckpt_buffers[n], b) for n, b in buffers.items())
    assert all(torch.equal(ckpt_grads[n], g) for n, g in grads.items())


@pytest.mark.parametrize('name, flags, blocks', [('train_beit', [], 12), ('train_mae', [], 12),
                                                 ('train_twins', ['--backbone', 'svt-s'], 18),
                                                 ('train_segnext', [], 13), ('train_hrnet', [], None),
                                                 ('train_convnext', [], 18), ('train_mobilenetv2', [], 17),
                                                 ('train_setr', ['--embed-dims', '64'], 24),
                                                 ('train_swin', [], 12), ('train_poolformer', [], 12)])
def test_each_kind_of_backbone_has_its_blocks_wrapped(name, flags, blocks):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = config_of(name, *flags, '--activation-ckpt')
    init_default_scope('mmseg')
    model = torch.nn.Module()
    model.backbone = MODELS.build(cfg['model']['backbone'])
    count = activation_ckpt.install(model, cfg[activation_ckpt.KEY])
    assert count == blocks if blocks else count > 0


def test_the_list_of_scripts_that_have_it_is_true_for_every_variant():
    has = {}
    for script in SCRIPTS:
        module = load_script(script)
        for variant in getattr(module, 'BACKBONES', None) or [None]:
            flags = ['--backbone', variant] if variant else []
            cfg = module.build_config(cli.parse(vars(module), ['--no-pretrained', *flags]))
            kind = activation_ckpt.backbone_type(cfg)
            has.setdefault(script.removeprefix("train_"), set()).add(kind in activation_ckpt.BLOCKS)
    assert all(len(ways) == 1 for ways in has.values()), has  # a script's variants all can or all cannot
    assert tuple(sorted(name for name, ways in has.items() if True in ways)) == activation_ckpt.SCRIPTS


def test_dump_config_shows_it(tmp_path):
    from mmengine.config import Config
    out = tmp_path / 'swin.py'
    load_script('train_swin').main(['--no-pretrained', '--activation-ckpt', '--dump-config', str(out)])
    assert Config.fromfile(str(out)).activation_ckpt.blocks == ['mmseg.models.backbones.swin.SwinBlock']
    plain = tmp_path / 'plain.py'
    load_script('train_swin').main(['--no-pretrained', '--dump-config', str(plain)])
    assert 'activation_ckpt' not in Config.fromfile(str(plain))


def test_a_backbone_without_it_is_refused_naming_the_scripts_that_have_it(tmp_path):
    run = subprocess.run([sys.executable, 'train_stdc.py', '--activation-ckpt', '--work-dir', str(tmp_path / 'w')],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    text = run.stdout + run.stderr
    assert 'STDCContextPathNet' in text and 'train_swin.py' in text and 'train_beit.py' in text
    assert 'Traceback' not in text
    assert not (tmp_path / 'w').exists()  # refused before the run made anything


def test_the_flag_is_a_common_setting():
    assert cli.COMMON_SETTINGS['ACTIVATION_CKPT'][0] is False
    assert '--activation-ckpt' in cli.build_parser(vars(load_script('train_fcn')))[0].format_help()
