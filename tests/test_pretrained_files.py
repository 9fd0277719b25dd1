"""The five files of the user's setup notes (issue 16): torchvision's V2 ResNet-50, Microsoft's
original Swin-B 384 22k, timm's ViT-B/16 384, MiT-B0 and a PoolFormer-S12, each usable where it fits
(or refused, before anything is built, where it does not), and `python -m common.pretrained list`
saying so for every file in pretrain/: what a file is (common/layouts.py), whether it fits
(weights_fit.py), what PRETRAINED auto takes (pretrained.py) and what list says (inventory.py). The
conversion of the Swin file itself: tests/test_convert_swin.py.

The fake checkpoints (tests/fakeweights.py) have the real key layout and shapes of the published files.
"""
import pytest
import torch

from common import checkpoints, inventory, layouts, pretrained, weights_fit
from common.errors import SetupError
from conftest import load_script
from fakeweights import (POOLFORMER_NOTES, RESNET_V2, SWIN_CONVERTED, SWIN_MMSEG, SWIN_SOURCE, VIT_SOURCE, build,
                         cheap, poolformer_classifier, script_config, timm_vit_shapes, torchvision_resnet)
import fakeweights


@pytest.fixture(scope='module')
def converted_swin_b(tmp_path_factory):
    return fakeweights.converted_swin_b(tmp_path_factory.mktemp('swin'))


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
    return fakeweights.converted_vit_b_384(tmp_path_factory.mktemp('vit'))


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


def test_list_of_an_empty_pretrain_folder(pretrain_here, capsys):
    pretrained.main(['list'])
    assert f'no weight files in {pretrain_here}' in capsys.readouterr().out
