"""The five files of the user's setup notes (issue 16): torchvision's V2 ResNet-50, Microsoft's
original Swin-B 384 22k, timm's ViT-B/16 384, MiT-B0 and a PoolFormer-S12, each usable where it fits
(or refused, before anything is built, where it does not), and `python -m common.pretrained list`
saying so for every file in pretrain/.

The fake checkpoints have the real key layout and shapes of the published files. Where only names
and shapes matter, each tensor is one number expanded to its shape (`cheap`): torch.save keeps one
element per tensor, so a fake Swin-B or ViT-B costs kilobytes, and every key still has its own value.
"""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common import checkpoints, cli, config, convert_swin, convert_vit, inventory, layouts, pretrained, weights_fit
from common.errors import SetupError
from conftest import load_script

SWIN_B = dict(embed=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), window=12, img=384)
SWIN_SOURCE = 'swin_base_patch4_window12_384_22k.pth'
SWIN_MMSEG = 'swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'
SWIN_CONVERTED = 'swin_base_patch4_window12_384_22k_mmseg.pth'
VIT_SOURCE = 'jx_vit_base_p16_384-83fb41ba.pth'
RESNET_V2 = 'resnet50-11ad3fa6.pth'
POOLFORMER_NOTES = 'poolformer_s12_8xb256_in1k_20221230-a59e4e30.pth'


def cheap(shapes, random=()):
    """A state dict of these shapes: tensor i is the number i expanded (random values for the keys
    in `random`)."""
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(*s, generator=gen) if k in random else torch.tensor(float(i)).expand(tuple(s))
            for i, (k, s) in enumerate(shapes.items())}


def relative_position_index(window):
    """The original Swin's (and mmseg's) index into the relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def swin_original_shapes(embed, depths, heads, window, img, classes=21841):
    """Keys and shapes of Microsoft's Swin-Transformer release (models/swin_transformer.py, ape off,
    patch_norm on): attn_mask buffers in the shifted blocks of the stages wider than a window."""
    shapes = {'patch_embed.proj.weight': (embed, 3, 4, 4), 'patch_embed.proj.bias': (embed,),
              'patch_embed.norm.weight': (embed,), 'patch_embed.norm.bias': (embed,)}
    for i, (depth, head) in enumerate(zip(depths, heads)):
        c, res = embed * 2 ** i, img // 4 // 2 ** i
        win = min(window, res)
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            shapes.update({p + 'norm1.weight': (c,), p + 'norm1.bias': (c,)})
            if j % 2 and res > window:
                shapes[p + 'attn_mask'] = ((res // win) ** 2, win * win, win * win)
            shapes.update({p + 'attn.relative_position_bias_table': ((2 * win - 1) ** 2, head),
                           p + 'attn.relative_position_index': (win * win, win * win),
                           p + 'attn.qkv.weight': (3 * c, c), p + 'attn.qkv.bias': (3 * c,),
                           p + 'attn.proj.weight': (c, c), p + 'attn.proj.bias': (c,),
                           p + 'norm2.weight': (c,), p + 'norm2.bias': (c,),
                           p + 'mlp.fc1.weight': (4 * c, c), p + 'mlp.fc1.bias': (4 * c,),
                           p + 'mlp.fc2.weight': (c, 4 * c), p + 'mlp.fc2.bias': (c,)})
        if i < len(depths) - 1:
            shapes.update({f'layers.{i}.downsample.reduction.weight': (2 * c, 4 * c),
                           f'layers.{i}.downsample.norm.weight': (4 * c,),
                           f'layers.{i}.downsample.norm.bias': (4 * c,)})
    top = embed * 2 ** (len(depths) - 1)
    shapes.update({'norm.weight': (top,), 'norm.bias': (top,), 'head.weight': (classes, top),
                   'head.bias': (classes,)})
    return shapes


def swin_original(embed, depths, heads, window, img, random=False, classes=21841):
    shapes = swin_original_shapes(embed, depths, heads, window, img, classes)
    sd = cheap(shapes, random=[k for k in shapes if random and not k.endswith('_index')])
    for key, shape in shapes.items():   # the index buffers hold their real values
        if key.endswith('relative_position_index'):
            sd[key] = relative_position_index(math.isqrt(shape[0]))
    return sd


def timm_vit_shapes(dims=768, depth=12, img=384, patch=16, classes=1000):
    """Keys and shapes of timm's jx_vit_* VisionTransformer files."""
    shapes = {'cls_token': (1, 1, dims), 'pos_embed': (1, (img // patch) ** 2 + 1, dims),
              'patch_embed.proj.weight': (dims, 3, patch, patch), 'patch_embed.proj.bias': (dims,)}
    for i in range(depth):
        p = f'blocks.{i}.'
        shapes.update({p + 'norm1.weight': (dims,), p + 'norm1.bias': (dims,),
                       p + 'attn.qkv.weight': (3 * dims, dims), p + 'attn.qkv.bias': (3 * dims,),
                       p + 'attn.proj.weight': (dims, dims), p + 'attn.proj.bias': (dims,),
                       p + 'norm2.weight': (dims,), p + 'norm2.bias': (dims,),
                       p + 'mlp.fc1.weight': (4 * dims, dims), p + 'mlp.fc1.bias': (4 * dims,),
                       p + 'mlp.fc2.weight': (dims, 4 * dims), p + 'mlp.fc2.bias': (dims,)})
    shapes.update({'norm.weight': (dims,), 'norm.bias': (dims,), 'head.weight': (classes, dims),
                   'head.bias': (classes,)})
    return shapes


def torchvision_resnet(depth=50):
    """torchvision's ResNet state dict keys and shapes (built on the meta device: no memory)."""
    import torchvision
    with torch.device('meta'):
        model = getattr(torchvision.models, f'resnet{depth}')()
    return cheap({k: tuple(v.shape) for k, v in model.state_dict().items()})


def poolformer_classifier(arch='s12', prefix='backbone.'):
    """An mmpretrain PoolFormer ImageNet classifier: backbone.* (network.0..6) and head.fc."""
    layers, widths = layouts.POOLFORMER_ARCHS[arch]
    shapes = {f'{prefix}patch_embed.proj.weight': (widths[0], 3, 7, 7), f'{prefix}patch_embed.proj.bias': (widths[0],)}
    for stage, (blocks, c) in enumerate(zip(layers, widths)):
        for j in range(blocks):
            p = f'{prefix}network.{2 * stage}.{j}.'
            shapes.update({p + 'norm1.weight': (c,), p + 'norm1.bias': (c,), p + 'norm2.weight': (c,),
                           p + 'norm2.bias': (c,), p + 'mlp.fc1.weight': (4 * c, c, 1, 1),
                           p + 'mlp.fc1.bias': (4 * c,), p + 'mlp.fc2.weight': (c, 4 * c, 1, 1),
                           p + 'mlp.fc2.bias': (c,), p + 'layer_scale_1': (c,), p + 'layer_scale_2': (c,)})
        if stage < 3:
            shapes.update({f'{prefix}network.{2 * stage + 1}.proj.weight': (widths[stage + 1], c, 3, 3),
                           f'{prefix}network.{2 * stage + 1}.proj.bias': (widths[stage + 1],)})
    shapes.update({f'{prefix}norm.weight': (widths[-1],), f'{prefix}norm.bias': (widths[-1],),
                   'head.fc.weight': (1000, widths[-1]), 'head.fc.bias': (1000,)})
    return {'meta': {'mmpretrain_version': '1.0.0'}, 'state_dict': cheap(shapes)}


def build(backbone):
    """The backbone config, as the script wrote it (SyncBN as BN on a CPU), built by mmseg's registry."""
    import mmpretrain.models  # noqa: F401  (registers mmpretrain.* types)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = {'backbone': dict(backbone)}
    config.sync_bn_to_bn(cfg)
    return MODELS.build(cfg['backbone'])


def script_config(name, *argv):
    module = load_script(name)
    return module.build_config(cli.parse(vars(module), list(argv)))


# ---------------------------------------------------------------- Swin: convert_swin

@pytest.fixture(scope='module')
def converted_swin_b(tmp_path_factory):
    """The notes' Swin file, faked in its real layout, converted by the command."""
    folder = tmp_path_factory.mktemp('swin')
    source = swin_original(**SWIN_B)
    torch.save({'model': source}, folder / SWIN_SOURCE)
    return source, convert_swin.main([str(folder / SWIN_SOURCE)])


@pytest.mark.parametrize('script, variant', [('swin', 'swin-b-384-in22k'), ('mask2former', 'swin-b')])
def test_converted_swin_b_has_exactly_the_tensors_of_the_scripts_backbone(converted_swin_b, script, variant):
    source, dst = converted_swin_b
    assert dst.name == SWIN_CONVERTED
    converted = checkpoints.load(dst)
    backbone = dict(script_config(script, '--backbone', variant)['model']['backbone'], init_cfg=None)
    model = build(backbone)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    added_norms = {f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}   # the backbone's own
    assert {k: tuple(v.shape) for k, v in converted.items()} == \
        {k: s for k, s in expected.items() if k not in added_norms}
    result = model.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == sorted(added_norms)
    assert torch.equal(model.state_dict()['stages.2.blocks.17.ffn.layers.1.weight'],
                       source['layers.2.blocks.17.mlp.fc2.weight'])


def test_the_scripts_init_loads_it_through_the_fit_audit(converted_swin_b):
    source, dst = converted_swin_b
    checkpoints.install()
    backbone = script_config('swin', '--backbone', 'swin-b-384-in22k', '--pretrained', str(dst))['model']['backbone']
    assert backbone['init_cfg'] == dict(type='Pretrained', checkpoint=str(dst))
    model = build(backbone)
    with weights_fit.must_fit():
        model.init_weights()
    state = model.state_dict()
    assert torch.equal(state['stages.0.blocks.1.attn.w_msa.relative_position_bias_table'],
                       source['layers.0.blocks.1.attn.relative_position_bias_table'])
    assert torch.equal(state['patch_embed.projection.weight'], source['patch_embed.proj.weight'])


def test_the_mapping_is_mmsegs_swin2mmseg(tmp_path):
    """Same tensors as mmseg's own converter (which made the recipes' files), less what its
    SwinTransformer has no place for: the classifier, its final norm and the attn_mask buffers."""
    import mmseg
    tool = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'model_converters' / 'swin2mmseg.py'
    spec = importlib.util.spec_from_file_location('swin2mmseg', tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = swin_original(embed=16, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), window=2, img=64, random=True,
                           classes=5)
    theirs = module.convert_swin(source)
    ours, dropped = convert_swin.convert(source)
    assert set(theirs) - set(ours) == {k for k in theirs if k.startswith('norm.') or k.endswith('.attn_mask')}
    assert set(ours) <= set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert set(dropped) == {k for k in source if k.startswith(('head.', 'norm.')) or k.endswith('attn_mask')}


def test_patch_merging_computes_what_the_original_computes():
    """The reordered reduction and norm: mmseg's PatchMerging (nn.Unfold) equals the original's
    [x0, x1, x2, x3] concatenation, LayerNorm, Linear."""
    from mmseg.models.utils.embed import PatchMerging
    c, h, w = 8, 4, 6
    gen = torch.Generator().manual_seed(0)
    weight, norm_w, norm_b = (torch.randn(2 * c, 4 * c, generator=gen), 1 + torch.randn(4 * c, generator=gen),
                              torch.randn(4 * c, generator=gen))
    x = torch.randn(2, h * w, c, generator=gen)
    grid = x.view(2, h, w, c)
    merged = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], -1)
    original = F.linear(F.layer_norm(merged.view(2, -1, 4 * c), (4 * c,), norm_w, norm_b), weight)
    ours = PatchMerging(in_channels=c, out_channels=2 * c, norm_cfg=dict(type='LN'), init_cfg=None)
    converted, _ = convert_swin.convert({'patch_embed.proj.weight': torch.zeros(1), 'layers.0.blocks.0.attn.qkv.weight':
                                         torch.zeros(1), 'layers.0.downsample.reduction.weight': weight,
                                         'layers.0.downsample.norm.weight': norm_w,
                                         'layers.0.downsample.norm.bias': norm_b})
    ours.load_state_dict({k.removeprefix('stages.0.downsample.'): v for k, v in converted.items()
                          if 'downsample' in k})
    torch.testing.assert_close(ours(x, (h, w))[0], original, rtol=1e-5, atol=1e-5)


def test_convert_swin_refuses_what_it_cannot_convert(converted_swin_b, tmp_path, capsys):
    _, dst = converted_swin_b
    for argv, message in (([str(dst), str(tmp_path / 'again.pth')], 'already in mmseg layout'),
                          ([str(dst.with_name(SWIN_SOURCE))] * 2, 'overwritten')):
        with pytest.raises(SystemExit) as stop:
            convert_swin.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    vit = tmp_path / 'vit.pth'
    torch.save(cheap(timm_vit_shapes(depth=1)), vit)
    with pytest.raises(SystemExit) as stop:
        convert_swin.main([str(vit)])
    assert stop.value.code == 2 and 'not an original Swin Transformer checkpoint' in capsys.readouterr().err
    assert not (tmp_path / 'vit_mmseg.pth').exists()


# ---------------------------------------------------------------- PRETRAINED auto and the converted Swin

def run_until_built(script, argv, monkeypatch):
    """Run the script's main: its output and the config it would train, stopping where the Runner
    would be built (train.prepare); a SetupError before that exits 2 as usual."""
    from common import train
    seen = {}

    def stop(cfg, s, plan):
        seen['cfg'] = cfg
        raise SystemExit(99)
    monkeypatch.setattr(train, 'prepare', stop)
    with pytest.raises(SystemExit) as stopped:
        load_script(script).main(argv)
    return stopped.value.code, seen.get('cfg')


@pytest.fixture
def pretrain_here(tmp_path, monkeypatch):
    """A pretrain/ folder in a temporary working directory (the scripts name pretrain/FILE)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'pretrain').mkdir()
    monkeypatch.setattr(pretrained, 'PRETRAIN_DIR', tmp_path / 'pretrain')
    return tmp_path / 'pretrain'


def test_auto_takes_the_converted_swin_when_mmsegs_copy_is_absent_and_says_so(converted_swin_b, pretrain_here,
                                                                               tiny_data, monkeypatch, capsys):
    (pretrain_here / SWIN_CONVERTED).write_bytes(converted_swin_b[1].read_bytes())
    argv = ['--backbone', 'swin-b-384-in22k', '--data-root', tiny_data, '--work-dir', 'w', '--num-workers', '0']
    code, cfg = run_until_built('swin', argv, monkeypatch)
    out = capsys.readouterr().out
    assert code == 99 and cfg['model']['backbone']['init_cfg']['checkpoint'] == f'pretrain/{SWIN_CONVERTED}'
    assert f'PRETRAINED auto: pretrain/{SWIN_MMSEG} is not there; using pretrain/{SWIN_CONVERTED}' in out
    assert f'converted from {SWIN_SOURCE} by common.convert_swin' in out
    # mmseg's own file, once there, is what auto takes again, without a note.
    (pretrain_here / SWIN_MMSEG).write_bytes(converted_swin_b[1].read_bytes())
    code, cfg = run_until_built('swin', argv, monkeypatch)
    assert code == 99 and cfg['model']['backbone']['init_cfg']['checkpoint'] == f'pretrain/{SWIN_MMSEG}'
    assert 'PRETRAINED auto' not in capsys.readouterr().out


def test_an_explicit_path_is_never_replaced(converted_swin_b, pretrain_here):
    (pretrain_here / SWIN_CONVERTED).write_bytes(converted_swin_b[1].read_bytes())
    assert pretrained.require(f'pretrain/{SWIN_MMSEG}', auto=True) == f'pretrain/{SWIN_CONVERTED}'
    with pytest.raises(SetupError, match='pretrained file not found'):
        pretrained.require(f'pretrain/{SWIN_MMSEG}')   # --pretrained pretrain/<mmseg's file>


def test_a_missing_swin_names_both_ways_to_get_it(pretrain_here):
    with pytest.raises(SetupError) as err:
        pretrained.require(f'pretrain/{SWIN_MMSEG}', auto=True)
    assert f'python -m common.pretrained fetch {SWIN_MMSEG}' in err.value.fix
    assert f'python -m common.pretrained fetch {SWIN_SOURCE}' in err.value.fix
    assert f'python -m common.convert_swin pretrain/{SWIN_SOURCE}' in err.value.fix


# ---------------------------------------------------------------- torchvision's V2 ResNet-50

@pytest.fixture
def resnet_v2(tmp_path):
    path = tmp_path / RESNET_V2
    torch.save(torchvision_resnet(50), path)
    return path


@pytest.mark.parametrize('script', ['mask2former', 'maskformer'])
def test_v2_resnet_passes_the_fit_checks_of_the_torchvision_resnet_recipes(resnet_v2, script):
    cfg = script_config(script, '--pretrained', str(resnet_v2))
    weights_fit.refuse_misfit(cfg)                      # before building: the layout fits
    checkpoints.install()
    model = build(cfg['model']['backbone'])
    with weights_fit.must_fit():                        # while loading: every tensor initialised
        model.init_weights()
    assert torch.equal(model.state_dict()['layer4.2.conv3.weight'], torch.load(resnet_v2)['layer4.2.conv3.weight'])


def test_auto_never_takes_the_v2_resnet():
    for script in ('mask2former', 'maskformer'):
        assert script_config(script)['model']['backbone']['init_cfg']['checkpoint'] == 'pretrain/resnet50-0676ba61.pth'
    assert RESNET_V2 not in pretrained.SAME_WEIGHTS and 'not the recipes' in pretrained.FILES[RESNET_V2][1]


def test_a_torchvision_resnet_into_resnet_v1c_is_refused_before_anything_is_built(resnet_v2, tiny_data, tmp_path,
                                                                                   monkeypatch, capsys):
    code, cfg = run_until_built('fcn', ['--data-root', tiny_data, '--work-dir', str(tmp_path / 'w'),
                                        '--pretrained', str(resnet_v2)], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and cfg is None, 'refused in the preflight checks, not once the Runner is built'
    assert f'the pretrained file {resnet_v2} does not fit ResNetV1c' in err
    assert "torchvision's ResNet-50 (stem conv1.weight)" in err and 'stem.0.weight' in err
    assert f'python train_mask2former.py --pretrained {resnet_v2}' in err
    assert f'python train_maskformer.py --pretrained {resnet_v2}' in err and '--no-pretrained' in err


@pytest.mark.parametrize('script, variant, source', [('swin', 'swin-b-384-in22k', SWIN_SOURCE),
                                                     ('vit_deit', 'vit-b', VIT_SOURCE)])
def test_an_unconverted_source_is_refused_with_the_conversion_to_run(converted_swin_b, converted_vit_b_384,
                                                                     tiny_data, tmp_path, monkeypatch, capsys,
                                                                     script, variant, source):
    folder = (converted_swin_b if source == SWIN_SOURCE else converted_vit_b_384)[1].parent
    path = folder / source
    code, cfg = run_until_built(script, ['--backbone', variant, '--data-root', tiny_data,
                                         '--work-dir', str(tmp_path / 'w'), '--pretrained', str(path)], monkeypatch)
    err = capsys.readouterr().err
    converter = 'common.convert_swin' if source == SWIN_SOURCE else 'common.convert_vit'
    assert code == 2 and cfg is None and f'the pretrained file {path} does not fit' in err
    made = folder / layouts.converted_name(source)
    assert f'run `python -m {converter} {path}`, then pass --pretrained {made}' in err


# ---------------------------------------------------------------- timm's ViT-B/16 384

@pytest.fixture(scope='module')
def converted_vit_b_384(tmp_path_factory):
    folder = tmp_path_factory.mktemp('vit')
    source = cheap(timm_vit_shapes(), random=['pos_embed'])
    torch.save(source, folder / VIT_SOURCE)
    return source, convert_vit.main([str(folder / VIT_SOURCE)])


@pytest.mark.parametrize('script, argv, grid', [('vit_deit', ['--backbone', 'vit-b'], 32),
                                                ('vit_deit', ['--backbone', 'deit-b'], 32),
                                                ('dpt', [], 14),   # img_size 224: resized again per forward
                                                ('segmenter', ['--backbone', 'vit-b'], 32)])
def test_vit_b_384_loads_with_its_position_grid_resized(converted_vit_b_384, script, argv, grid):
    source, dst = converted_vit_b_384
    assert dst.name == 'jx_vit_base_p16_384-83fb41ba_mmseg.pth'
    cfg = script_config(script, *argv, '--pretrained', str(dst))
    weights_fit.refuse_misfit(cfg)
    checkpoints.install()
    model = build(dict(cfg['model']['backbone'], pretrained=cfg['model']['pretrained']))
    with weights_fit.must_fit():
        model.init_weights()
    state = model.state_dict()
    assert state['pos_embed'].shape == (1, grid * grid + 1, 768)
    resized = model.resize_pos_embed(source['pos_embed'], (grid, grid), (24, 24), model.interpolate_mode)
    assert torch.equal(state['pos_embed'], resized)
    assert torch.equal(state['layers.11.ffn.layers.1.weight'], source['blocks.11.mlp.fc2.weight'])


def test_vit_b_384_is_never_taken_by_auto():
    for script, argv in (('vit_deit', ['--backbone', 'vit-b']), ('dpt', []), ('segmenter', ['--backbone', 'vit-b'])):
        assert 'jx_vit_base_p16_384' not in str(script_config(script, *argv)['model']['pretrained'])


# ---------------------------------------------------------------- python -m common.pretrained list

def test_poolformer_archs_are_mmpretrains():
    from mmpretrain.models.backbones.poolformer import PoolFormer
    assert layouts.POOLFORMER_ARCHS == {k: (tuple(v['layers']), tuple(v['embed_dims']))
                                        for k, v in PoolFormer.arch_settings.items()}


def blocks(text):
    """list's second part: {file name: its lines}."""
    found, current = {}, None
    for line in text.split('files in ', 1)[1].splitlines()[1:]:
        if not line.startswith(' '):
            current = found.setdefault(line, [])
        else:
            current.append(line.strip())
    return found


def test_list_says_what_each_file_is_and_which_commands_use_it(pretrain_here, converted_swin_b, capsys):
    torch.save(torchvision_resnet(50), pretrain_here / RESNET_V2)
    torch.save(torchvision_resnet(152), pretrain_here / 'resnet152-f82ba261.pth')
    (pretrain_here / SWIN_SOURCE).write_bytes((converted_swin_b[1].with_name(SWIN_SOURCE)).read_bytes())
    (pretrain_here / SWIN_CONVERTED).write_bytes(converted_swin_b[1].read_bytes())
    torch.save(cheap(timm_vit_shapes()), pretrain_here / VIT_SOURCE)
    torch.save({'state_dict': cheap({'layers.0.0.projection.weight': (32, 3, 7, 7)})},
               pretrain_here / 'mit_b0_20220624-7e0fe6dd.pth')
    torch.save(poolformer_classifier('s12'), pretrain_here / POOLFORMER_NOTES)
    torch.save(poolformer_classifier('s12', prefix='')['state_dict'], pretrain_here / 'poolformer_s12.pth')
    torch.save({'weight': torch.zeros(3)}, pretrain_here / 'mystery.pth')
    (pretrain_here / 'broken.pth').write_bytes(b'not a checkpoint')
    (pretrain_here / f'{RESNET_V2}.part').write_bytes(b'unfinished download')
    pretrained.main(['list'])
    out = capsys.readouterr().out
    # The registry rows, as before.
    assert f'{"present":8} {RESNET_V2:58} {pretrained.FILES[RESNET_V2][2]}' in out.splitlines()
    assert f'{"missing":8} {"resnet50_v1c-2cccc1ad.pth":58} {pretrained.FILES["resnet50_v1c-2cccc1ad.pth"][2]}' \
        in out.splitlines()
    found = blocks(out)
    assert sorted(found) == sorted(p.name for p in pretrain_here.iterdir() if not p.name.endswith('.part'))

    v2 = found[RESNET_V2]
    assert v2[0].startswith('registered: torchvision ResNet-50 ImageNet, IMAGENET1K_V2')
    assert v2[1] == "layout: torchvision's ResNet-50 (stem conv1.weight)"
    assert v2[2] == inventory.OTHER_WEIGHTS and v2[3:] == [
        f'python train_mask2former.py --pretrained pretrain/{RESNET_V2}',
        f'python train_maskformer.py --pretrained pretrain/{RESNET_V2}']

    swin = found[SWIN_SOURCE]
    assert swin[1:3] == [f'converted to: {SWIN_CONVERTED} (present)', "layout: Swin in Microsoft's original "
                         'layout: embed 128, depths [2, 2, 18, 2], heads [4, 8, 16, 32], window 12']
    assert swin[3] == f'no script loads this layout: the scripts use its conversion {SWIN_CONVERTED}, listed under ' \
                      f'its name (PRETRAINED auto takes it where {SWIN_MMSEG} is absent)'
    ours = found[SWIN_CONVERTED]
    assert ours[0] == f'not registered: converted from {SWIN_SOURCE} by ' \
                      f'`python -m common.convert_swin pretrain/{SWIN_SOURCE}`'
    assert ours[1] == 'layout: Swin in mmseg layout: embed 128, depths [2, 2, 18, 2], heads [4, 8, 16, 32], window 12'
    assert ours[2].startswith(f'same weights as {SWIN_MMSEG}, which is absent: PRETRAINED auto takes this file')
    assert ours[3:6] == ['used by (PRETRAINED auto):', 'python train_mask2former.py --backbone swin-b',
                         'python train_swin.py --backbone swin-b-384-in22k']
    assert ours[6:] == [inventory.OTHER_WEIGHTS,   # the same window-12 Swin-B, ImageNet-1k weights in their recipes
                        f'python train_mask2former.py --backbone swin-b-in1k --pretrained pretrain/{SWIN_CONVERTED}',
                        f'python train_swin.py --backbone swin-b-384 --pretrained pretrain/{SWIN_CONVERTED}']

    vit = found[VIT_SOURCE]
    assert vit[1] == f'converted to: jx_vit_base_p16_384-83fb41ba_mmseg.pth (not made yet: ' \
                     f'`python -m common.convert_vit pretrain/{VIT_SOURCE}`)'
    assert vit[2] == 'layout: ViT in timm/DeiT layout: width 768, 12 layers, patch 16, position grid 24x24'
    made = 'pretrain/jx_vit_base_p16_384-83fb41ba_mmseg.pth'
    assert vit[3] == 'no script loads this layout; converted, jx_vit_base_p16_384-83fb41ba_mmseg.pth fits these:'
    assert vit[4:] == [f'python train_dpt.py --pretrained {made}',
                       f'python train_segmenter.py --backbone vit-b --pretrained {made}',
                       f'python train_vit_deit.py --backbone deit-b --pretrained {made}',   # the same ViT-B/16
                       f'python train_vit_deit.py --backbone vit-b --pretrained {made}',
                       f'python train_vit_deit.py --backbone deit-b-mln --pretrained {made}',
                       f'python train_vit_deit.py --backbone deit-b-ln-mln --pretrained {made}',
                       f'python train_vit_deit.py --backbone vit-b-ln --pretrained {made}']

    assert found['mit_b0_20220624-7e0fe6dd.pth'][1:] == ['used by (PRETRAINED auto):', 'python train_segformer.py']
    assert found[POOLFORMER_NOTES] == [
        'not registered', "layout: PoolFormer-S12 (mmpretrain classifier, under 'backbone.')", inventory.OTHER_WEIGHTS,
        f'python train_poolformer.py --pretrained pretrain/{POOLFORMER_NOTES}']
    bare = found['poolformer_s12.pth']
    assert bare[2].startswith("fits nothing: its tensors are not under 'backbone.' (it is PoolFormer-S12")
    assert found['resnet152-f82ba261.pth'][2] == (
        "fits nothing: it is torchvision's ResNet-152 (stem conv1.weight); no script builds that (the scripts' "
        "ResNet backbones: ResNet-101 with the deep stem (stem.0.weight, stem.1.weight, ...); ResNet-101 with "
        "torchvision's stem (conv1.weight); ResNet-18 with the deep stem (stem.0.weight, stem.1.weight, ...); "
        "ResNet-50 with the deep stem (stem.0.weight, stem.1.weight, ...); "
        "ResNet-50 with torchvision's stem (conv1.weight))")
    assert found['mystery.pth'][1].startswith('fits nothing: its 1 tensors (weight) are in no layout recognised here')
    assert found['broken.pth'][1].startswith(f'fits nothing: pretrained file {pretrain_here / "broken.pth"}')


def test_convert_swin_errors_are_one_message(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    proc = subprocess.run([sys.executable, '-m', 'common.convert_swin', str(tmp_path / SWIN_SOURCE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert f'Swin checkpoint not found: {tmp_path / SWIN_SOURCE}' in proc.stderr


def test_list_of_an_empty_pretrain_folder(pretrain_here, capsys):
    pretrained.main(['list'])
    assert f'no weight files in {pretrain_here}' in capsys.readouterr().out
