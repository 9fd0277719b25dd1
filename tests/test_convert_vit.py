"""common.convert_vit: a checkpoint in timm/DeiT's key layout, converted, loads into mmseg's
VisionTransformer with every tensor in place and computes what the timm model computes."""
import pytest
import torch
import torch.nn.functional as F

from common import convert_vit, checkpoints

DIMS, DEPTH, HEADS, PATCH, IMG = 32, 2, 2, 16, 32


def timm_state_dict(dims=DIMS, depth=DEPTH, img=IMG, classes=10):
    """The keys and shapes of timm's VisionTransformer (and DeiT's), with random values."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    tokens = (img // PATCH) ** 2 + 1
    sd = {'cls_token': rand(1, 1, dims), 'pos_embed': rand(1, tokens, dims),
          'patch_embed.proj.weight': rand(dims, 3, PATCH, PATCH), 'patch_embed.proj.bias': rand(dims)}
    for i in range(depth):
        p = f'blocks.{i}.'
        sd.update({p + 'norm1.weight': 1 + rand(dims), p + 'norm1.bias': rand(dims),
                   p + 'attn.qkv.weight': rand(3 * dims, dims), p + 'attn.qkv.bias': rand(3 * dims),
                   p + 'attn.proj.weight': rand(dims, dims), p + 'attn.proj.bias': rand(dims),
                   p + 'norm2.weight': 1 + rand(dims), p + 'norm2.bias': rand(dims),
                   p + 'mlp.fc1.weight': rand(4 * dims, dims), p + 'mlp.fc1.bias': rand(4 * dims),
                   p + 'mlp.fc2.weight': rand(dims, 4 * dims), p + 'mlp.fc2.bias': rand(dims)})
    sd.update({'norm.weight': 1 + rand(dims), 'norm.bias': rand(dims),
               'head.weight': rand(classes, dims), 'head.bias': rand(classes)})
    return sd


def timm_forward(sd, x, depth=DEPTH, heads=HEADS):
    """timm's ViT forward (pre-norm blocks, LN eps 1e-6), written out: patch tokens after the final norm."""
    dims = sd['cls_token'].shape[-1]
    t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=PATCH)
    b, _, h, w = t.shape
    t = torch.cat([sd['cls_token'].expand(b, -1, -1), t.flatten(2).transpose(1, 2)], 1) + sd['pos_embed']
    for i in range(depth):
        p = f'blocks.{i}.'
        y = F.layer_norm(t, (dims,), sd[p + 'norm1.weight'], sd[p + 'norm1.bias'], eps=1e-6)
        q, k, v = F.linear(y, sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias']) \
            .reshape(b, -1, 3, heads, dims // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (dims // heads) ** -0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, dims)
        t = t + F.linear(y, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
        y = F.layer_norm(t, (dims,), sd[p + 'norm2.weight'], sd[p + 'norm2.bias'], eps=1e-6)
        t = t + F.linear(F.gelu(F.linear(y, sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'])),
                         sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
    t = F.layer_norm(t, (dims,), sd['norm.weight'], sd['norm.bias'], eps=1e-6)
    return t[:, 1:].transpose(1, 2).reshape(b, dims, h, w)


def mmseg_vit(img=IMG, **overrides):
    """mmseg's VisionTransformer from the registry, small; by default with every tensor timm has."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = dict(type='VisionTransformer', img_size=(img, img), patch_size=PATCH, embed_dims=DIMS, num_layers=DEPTH,
               num_heads=HEADS, mlp_ratio=4, qkv_bias=True, with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6),
               act_cfg=dict(type='GELU'), patch_bias=True, final_norm=True, interpolate_mode='bicubic')
    cfg.update(overrides)
    model = MODELS.build(cfg)
    model.eval()      # (mmseg's VisionTransformer.train() returns None, so no chaining)
    return model


def converted_file(tmp_path, wrapper=None, sd=None):
    sd = timm_state_dict() if sd is None else sd
    src = tmp_path / 'vit_src-0123abcd.pth'
    torch.save({wrapper: sd} if wrapper else sd, src)
    dst = convert_vit.main([str(src)])
    return sd, dst


@pytest.mark.parametrize('wrapper', [None, 'model', 'state_dict'], ids=['plain-timm', 'deit-model', 'state_dict'])
def test_converted_checkpoint_loads_with_no_missing_or_unexpected_keys(tmp_path, wrapper):
    sd, dst = converted_file(tmp_path, wrapper)
    assert dst == tmp_path / 'vit_src-0123abcd_mmseg.pth' and dst.is_file()
    converted = checkpoints.load(dst)
    model = mmseg_vit()
    result = model.load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    state = model.state_dict()
    assert len(converted) == len(state) == len(sd) - 2   # all but the classifier head.weight/bias
    # Same values, key by key (spot-check every kind of tensor through the published mapping).
    pairs = {'cls_token': 'cls_token', 'pos_embed': 'pos_embed',
             'patch_embed.projection.weight': 'patch_embed.proj.weight', 'ln1.bias': 'norm.bias',
             'layers.1.ln1.weight': 'blocks.1.norm1.weight', 'layers.1.ln2.bias': 'blocks.1.norm2.bias',
             'layers.0.attn.attn.in_proj_weight': 'blocks.0.attn.qkv.weight',
             'layers.0.attn.attn.in_proj_bias': 'blocks.0.attn.qkv.bias',
             'layers.1.attn.attn.out_proj.weight': 'blocks.1.attn.proj.weight',
             'layers.0.ffn.layers.0.0.weight': 'blocks.0.mlp.fc1.weight',
             'layers.1.ffn.layers.1.bias': 'blocks.1.mlp.fc2.bias'}
    for mine, theirs in pairs.items():
        assert torch.equal(state[mine], sd[theirs]), mine
    # And every tensor the source had (but the head) is in the model, unchanged.
    assert sorted(torch.cat([v.flatten() for v in state.values()]).tolist()) == \
        sorted(torch.cat([v.flatten() for k, v in sd.items() if not k.startswith('head.')]).tolist())


def test_converted_model_computes_what_timm_computes(tmp_path):
    sd, dst = converted_file(tmp_path)
    model = mmseg_vit()
    model.load_state_dict(checkpoints.load(dst), strict=True)
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)[-1]
    torch.testing.assert_close(ours, timm_forward(sd, x), rtol=1e-4, atol=1e-5)


def test_pretrained_init_reads_it_and_resizes_pos_embed(tmp_path):
    """The path training takes: init_cfg Pretrained, at a crop larger than the pretraining size."""
    sd, dst = converted_file(tmp_path)
    model = mmseg_vit(img=2 * IMG, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    state = model.state_dict()
    assert state['pos_embed'].shape == (1, (2 * IMG // PATCH) ** 2 + 1, DIMS)
    assert torch.equal(state['layers.1.ffn.layers.0.0.weight'], sd['blocks.1.mlp.fc1.weight'])
    assert torch.equal(state['cls_token'], sd['cls_token'])


def test_recipe_backbones_leave_only_patch_bias_and_final_norm_unused(tmp_path):
    """The recipes' ViT has patch_bias=False (and final_norm=False in SETR/UPerNet): those tensors
    of the file go unused, as with mmseg's own vit2mmseg.py; nothing is missing."""
    _, dst = converted_file(tmp_path)
    result = mmseg_vit(patch_bias=False, final_norm=False).load_state_dict(checkpoints.load(dst), strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ['ln1.bias', 'ln1.weight', 'patch_embed.projection.bias']


def test_refuses_what_it_cannot_convert(tmp_path, capsys):
    sd, dst = converted_file(tmp_path)
    with pytest.raises(SystemExit) as exit_info:      # already converted
        convert_vit.main([str(dst), str(tmp_path / 'again.pth')])
    assert exit_info.value.code == 2 and 'already in mmseg layout' in capsys.readouterr().err
    src = tmp_path / 'vit_src-0123abcd.pth'
    with pytest.raises(SystemExit):                    # would overwrite the source
        convert_vit.main([str(src), str(src)])
    assert 'overwritten' in capsys.readouterr().err
    distilled = tmp_path / 'deit_distilled.pth'
    torch.save({'model': {**sd, 'dist_token': torch.zeros(1, 1, DIMS)}}, distilled)
    with pytest.raises(SystemExit):
        convert_vit.main([str(distilled)])
    assert 'distilled' in capsys.readouterr().err
    assert not (tmp_path / 'deit_distilled_mmseg.pth').exists()
