"""common.convert_swin: Microsoft's original Swin Transformer checkpoint (the user's Swin-B 384 22k, faked
here in its real key layout and shapes) converts to exactly the tensors of the scripts' Swin backbone,
loads through the fit audit, maps as mmseg's own swin2mmseg does (PatchMerging computing what the
original computes), and what it cannot convert is refused with one message.
"""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common import checkpoints, convert_swin, weights_fit
from fakeweights import (SWIN_CONVERTED, SWIN_SOURCE, build, cheap, script_config, swin_original,
                         timm_vit_shapes)
import fakeweights


@pytest.fixture(scope='module')
def converted_swin_b(tmp_path_factory):
    """The notes' Swin file, faked in its real layout, converted by the command."""
    return fakeweights.converted_swin_b(tmp_path_factory.mktemp('swin'))


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


def test_convert_swin_errors_are_one_message(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    proc = subprocess.run([sys.executable, '-m', 'common.convert_swin', str(tmp_path / SWIN_SOURCE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert f'Swin checkpoint not found: {tmp_path / SWIN_SOURCE}' in proc.stderr
