"""common.convert_beit and common.fixed_window: BEiT's and MAE's checkpoints (their published key
layouts, made here with random values) convert to mmseg's layout and compute what the originals
compute; a relative-position table of another window resizes on loading without scipy's removed
interp2d; MAE's file may lack exactly its layer scales and relative-position tables."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import checkpoints, convert_beit, fixed_window
from common.errors import SetupError
from test_convert_vit import timm_forward, timm_state_dict

DIMS, DEPTH, HEADS, PATCH = 32, 2, 2, 16


def relative_position_index(window):
    """The index BEiT's repository builds (beit/modeling_finetune.py): token pair -> table row; the
    last 3 rows are class-to-token, token-to-class and class-to-class."""
    wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    rows = (2 * wh - 1) * (2 * ww - 1) + 3
    index = torch.zeros((wh * ww + 1,) * 2, dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:], index[0:, 0], index[0, 0] = rows - 3, rows - 2, rows - 1
    return index


def beit_state_dict(dims=DIMS, depth=DEPTH, heads=HEADS, window=2, classes=10, shared_table=False, seed=0,
                    dtype=torch.float32):
    """The keys and shapes of BEiT's fine-tuned files (beit_*_patch16_224_pt22k_ft22k.pth: relative
    position bias per block, layer scale, q/v biases, mean pooling: fc_norm, no final norm)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.2).to(dtype)

    rows = (2 * window - 1) ** 2 + 3
    sd = {'cls_token': rand(1, 1, dims), 'patch_embed.proj.weight': rand(dims, 3, PATCH, PATCH),
          'patch_embed.proj.bias': rand(dims)}
    if shared_table:
        sd['rel_pos_bias.relative_position_bias_table'] = rand(rows, heads)
        sd['rel_pos_bias.relative_position_index'] = relative_position_index((window, window))
    for i in range(depth):
        p = f'blocks.{i}.'
        sd.update({p + 'gamma_1': 0.1 + rand(dims), p + 'gamma_2': 0.1 + rand(dims),
                   p + 'norm1.weight': 1 + rand(dims), p + 'norm1.bias': rand(dims),
                   p + 'attn.q_bias': rand(dims), p + 'attn.v_bias': rand(dims),
                   p + 'attn.qkv.weight': rand(3 * dims, dims),
                   p + 'attn.proj.weight': rand(dims, dims), p + 'attn.proj.bias': rand(dims),
                   p + 'norm2.weight': 1 + rand(dims), p + 'norm2.bias': rand(dims),
                   p + 'mlp.fc1.weight': rand(4 * dims, dims), p + 'mlp.fc1.bias': rand(4 * dims),
                   p + 'mlp.fc2.weight': rand(dims, 4 * dims), p + 'mlp.fc2.bias': rand(dims)})
        if not shared_table:
            sd[p + 'attn.relative_position_bias_table'] = rand(rows, heads)
            sd[p + 'attn.relative_position_index'] = relative_position_index((window, window))
    sd.update({'fc_norm.weight': 1 + rand(dims), 'fc_norm.bias': rand(dims),
               'head.weight': rand(classes, dims), 'head.bias': rand(classes)})
    return sd


def mae_state_dict(dims=DIMS, depth=DEPTH, window=2, seed=0, dtype=torch.float32):
    """The keys and shapes of MAE's pretrained encoder (mae_pretrain_vit_base.pth): a plain ViT with
    qkv bias, a position grid and a final norm; no classifier, no layer scale, no relative bias."""
    sd = timm_state_dict(dims=dims, depth=depth, img=window * PATCH)
    if seed:
        g = torch.Generator().manual_seed(seed)
        sd = {k: torch.randn(v.shape, generator=g) * 0.2 + (1 if 'norm' in k and 'weight' in k else 0)
              for k, v in sd.items()}
    return {k: v.to(dtype) for k, v in sd.items() if not k.startswith('head.')}


def beit_forward(sd, x, depth=DEPTH, heads=HEADS):
    """BEiT's forward, written out from its repository: pre-norm blocks with layer scale, q and v
    biases (none for k), a relative-position bias added to the attention logits; patch tokens out."""
    dims = sd['cls_token'].shape[-1]
    t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=PATCH)
    b, _, h, w = t.shape
    t = torch.cat([sd['cls_token'].expand(b, -1, -1), t.flatten(2).transpose(1, 2)], 1)
    n = t.shape[1]
    for i in range(depth):
        p = f'blocks.{i}.'
        y = F.layer_norm(t, (dims,), sd[p + 'norm1.weight'], sd[p + 'norm1.bias'], eps=1e-6)
        bias = torch.cat([sd[p + 'attn.q_bias'], torch.zeros(dims), sd[p + 'attn.v_bias']])
        q, k, v = F.linear(y, sd[p + 'attn.qkv.weight'], bias).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        logits = (q * (dims // heads) ** -0.5) @ k.transpose(-2, -1)
        table = sd[p + 'attn.relative_position_bias_table']
        logits = logits + table[relative_position_index((h, w)).view(-1)].view(n, n, -1).permute(2, 0, 1)
        y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, dims)
        t = t + sd[p + 'gamma_1'] * F.linear(y, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
        y = F.layer_norm(t, (dims,), sd[p + 'norm2.weight'], sd[p + 'norm2.bias'], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'])),
                     sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
        t = t + sd[p + 'gamma_2'] * y
    return t[:, 1:].transpose(1, 2).reshape(b, dims, h, w)


def mmseg_backbone(kind='BEiT', window=2, **overrides):
    """mmseg's BEiT or MAE from the registry, small."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = dict(type=kind, img_size=(window * PATCH,) * 2, patch_size=PATCH, embed_dims=DIMS, num_layers=DEPTH,
               num_heads=HEADS, mlp_ratio=4, out_indices=(DEPTH - 1,), norm_cfg=dict(type='LN', eps=1e-6),
               init_values=0.1 if kind == 'BEiT' else 1.0)
    cfg.update(overrides)
    model = MODELS.build(cfg)
    model.eval()
    return model


def converted(tmp_path, sd, name='beit_src.pth', wrapper='model'):
    src = tmp_path / name
    torch.save({wrapper: sd} if wrapper else sd, src)
    return convert_beit.main([str(src)])


# ---------------------------------------------------------------- the conversion

@pytest.mark.parametrize('wrapper', ['model', None])
def test_beit_file_loads_every_tensor_and_computes_what_beit_computes(tmp_path, wrapper):
    sd = beit_state_dict()
    dst = converted(tmp_path, sd, wrapper=wrapper)
    assert dst == tmp_path / 'beit_src_mmseg.pth'
    state = checkpoints.load(dst)
    assert not any(k.startswith(('head.', 'fc_norm.', 'blocks.', 'patch_embed.proj.')) for k in state)
    model = mmseg_backbone('BEiT')
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == [f'layers.{i}.attn.relative_position_index' for i in range(DEPTH)]
    mine = model.state_dict()
    for ours, theirs in {'layers.1.ln1.weight': 'blocks.1.norm1.weight', 'layers.0.attn.q_bias': 'blocks.0.attn.q_bias',
                         'layers.1.gamma_2': 'blocks.1.gamma_2', 'layers.0.ffn.layers.0.0.weight': 'blocks.0.mlp.fc1.weight',
                         'layers.1.ffn.layers.1.bias': 'blocks.1.mlp.fc2.bias',
                         'patch_embed.projection.weight': 'patch_embed.proj.weight',
                         'layers.1.attn.relative_position_bias_table': 'blocks.1.attn.relative_position_bias_table'}.items():
        assert torch.equal(mine[ours], sd[theirs]), ours
    x = torch.randn(2, 3, 2 * PATCH, 2 * PATCH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)[-1]
    torch.testing.assert_close(out, beit_forward(sd, x), rtol=1e-4, atol=1e-5)


def test_a_shared_relative_position_table_goes_to_every_layer(tmp_path):
    sd = beit_state_dict(shared_table=True)
    state = checkpoints.load(converted(tmp_path, sd))
    table = sd['rel_pos_bias.relative_position_bias_table']
    assert all(torch.equal(state[f'layers.{i}.attn.relative_position_bias_table'], table) for i in range(DEPTH))
    assert not any(k.startswith('rel_pos_bias') for k in state)


def test_mae_file_computes_the_pretrained_vit_and_lacks_only_layer_scale_and_tables(tmp_path):
    """MAE's encoder is a plain ViT: with layer scale 1 and zero relative-position bias (mmseg's
    init), mmseg's MAE computes what it computes; the final norm lands in ln1 (used with final_norm)."""
    sd = mae_state_dict()
    state = checkpoints.load(converted(tmp_path, sd, name='mae_src.pth'))
    model = mmseg_backbone('MAE', final_norm=True)
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(
        f'layers.{i}.{k}' for i in range(DEPTH)
        for k in ('gamma_1', 'gamma_2', 'attn.relative_position_bias_table', 'attn.relative_position_index'))
    x = torch.randn(2, 3, 2 * PATCH, 2 * PATCH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)[-1]
    torch.testing.assert_close(out, timm_forward(sd, x), rtol=1e-4, atol=1e-5)


def test_refuses_what_it_cannot_convert(tmp_path, capsys):
    dst = converted(tmp_path, beit_state_dict())
    with pytest.raises(SystemExit) as exit_info:      # already converted
        convert_beit.main([str(dst), str(tmp_path / 'again.pth')])
    assert exit_info.value.code == 2 and 'already in mmseg layout' in capsys.readouterr().err
    src = tmp_path / 'beit_src.pth'
    with pytest.raises(SystemExit):                    # would overwrite the source
        convert_beit.main([str(src), str(src)])
    assert 'overwritten' in capsys.readouterr().err
    resnet = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(8, 3, 7, 7), 'layer1.0.conv1.weight': torch.zeros(8, 8, 1, 1)}, resnet)
    with pytest.raises(SystemExit):
        convert_beit.main([str(resnet)])
    assert 'not a BEiT or MAE' in capsys.readouterr().err
    assert not (tmp_path / 'resnet_mmseg.pth').exists()


# ---------------------------------------------------------------- the table resize without interp2d

def test_the_pinned_scipy_has_no_interp2d():
    """The trap fixed_window.resizing removes: mmseg's BEiT calls this to resize a pretrained table."""
    from scipy import interpolate
    with pytest.raises(NotImplementedError):
        interpolate.interp2d([0, 1, 2, 3], [0, 1, 2, 3], np.zeros((4, 4)), kind='cubic')


@pytest.mark.parametrize('src, dst', [(13, 27), (27, 79), (27, 7)], ids=['up', 'up-224-to-640', 'down'])
def test_geometric_resize_is_the_bicubic_interpolant_at_mmsegs_points(src, dst):
    """A bicubic interpolating spline reproduces any polynomial of degree 3 in each variable: on the
    target points inside the source grid the resize must give the polynomial's values exactly."""
    source, target = fixed_window.geometric_positions(src, dst)
    assert len(source) == src and len(target) == dst and source[src // 2] == 0 == target[dst // 2]
    assert np.all(np.diff(source) > 0) and np.allclose(np.diff(target), 1)

    def poly(y, x, head):
        return (1 + 0.3 * x - 0.02 * x ** 2 + 1e-3 * x ** 3) * (2 - 0.1 * y + 1e-3 * y ** 3) + head

    heads = 3
    table = torch.tensor(np.stack([poly(source[:, None], source[None, :], h).ravel() for h in range(heads)], 1))
    resized = fixed_window.geometric_resize(table.float(), src, dst)
    assert resized.shape == (dst * dst, heads) and resized.dtype == torch.float32
    expected = np.stack([poly(target[:, None], target[None, :], h).ravel() for h in range(heads)], 1)
    inside = np.abs(target) <= source[-1]
    mask = (inside[:, None] & inside[None, :]).ravel()
    np.testing.assert_allclose(resized.numpy()[mask], expected[mask], rtol=1e-4, atol=1e-4)
    # Past the source grid's edge the spline is held at the edge (FITPACK's bispev clamps), as interp2d.
    if not inside.all():
        edge = np.abs(target) > source[-1]
        assert np.isfinite(resized.numpy()).all() and edge.any()


def test_a_pretrained_table_of_another_window_loads_through_mmseg(tmp_path):
    """mmseg's BEiT init path (init_cfg Pretrained -> resize_rel_pos_embed) with a table of window 7
    (rows 13^2 + 3) into a window-4 model (7^2 + 3): resized, class-token rows kept, centre kept."""
    from common import weights_fit
    sd = beit_state_dict(window=7, seed=3)
    dst = converted(tmp_path, sd)
    model = mmseg_backbone('BEiT', window=4, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    with weights_fit.must_fit(), fixed_window.resizing():
        assert fixed_window.installed()
        model.init_weights()
    assert not fixed_window.installed(), "mmseg's own method again after the run"
    table = model.state_dict()['layers.1.attn.relative_position_bias_table']
    source = sd['blocks.1.attn.relative_position_bias_table']
    assert table.shape == (7 ** 2 + 3, HEADS)
    assert torch.equal(table[-3:], source[-3:])                                       # class-token rows
    torch.testing.assert_close(table[(7 * 7) // 2], source[(13 * 13) // 2])           # offset (0, 0)
    torch.testing.assert_close(table[:-3], fixed_window.geometric_resize(source[:-3], 13, 7))
    assert torch.equal(model.state_dict()['layers.0.attn.q_bias'], sd['blocks.0.attn.q_bias'])


# ---------------------------------------------------------------- what MAE's file may lack

def test_mae_may_lack_exactly_layer_scale_and_tables(tmp_path):
    """The pretrained-fit audit accepts MAE's file (no gamma, no tables) and resizes its 2x2 grid to
    the model's 4x4; a file lacking anything else is refused, and so is a BEiT lacking its gammas."""
    from common import weights_fit
    sd = mae_state_dict(window=2, seed=5)
    good = converted(tmp_path, sd, name='mae_src.pth')
    model = mmseg_backbone('MAE', window=4, init_cfg=dict(type='Pretrained', checkpoint=str(good)))
    with weights_fit.must_fit():
        model.init_weights()
    state = model.state_dict()
    assert state['pos_embed'].shape == (1, 4 * 4 + 1, DIMS)
    assert torch.equal(state['layers.1.attn.qkv.bias'], sd['blocks.1.attn.qkv.bias'])
    assert torch.equal(state['layers.0.gamma_1'], torch.ones(DIMS))                     # identity layer scale
    assert not state['layers.0.attn.relative_position_bias_table'].any()                 # zero bias

    for missing in ('blocks.0.attn.qkv.bias', 'pos_embed', 'blocks.1.mlp.fc2.weight'):
        partial = {k: v for k, v in sd.items() if k != missing}
        path = converted(tmp_path, partial, name=f'mae_without_{missing.replace(".", "_")}.pth')
        model = mmseg_backbone('MAE', window=4, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        with pytest.raises(SetupError) as err, weights_fit.must_fit():
            model.init_weights()
        assert convert_beit.convert_key(missing) in err.value.what and 'MAE' in err.value.what

    beit = {k: v for k, v in beit_state_dict(window=4).items() if 'gamma' not in k}
    path = converted(tmp_path, beit, name='beit_without_gamma.pth')
    model = mmseg_backbone('BEiT', window=4, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(SetupError) as err, weights_fit.must_fit():
        model.init_weights()
    assert 'layers.0.gamma_1' in err.value.what


# ---------------------------------------------------------------- test views no smaller than the window

def test_resize_to_at_least_enlarges_small_views_only():
    small = dict(img=np.zeros((40, 32, 3), np.uint8), img_shape=(40, 32), ori_shape=(40, 32))
    out = fixed_window.ResizeToAtLeast(size=(64, 64))(small)
    assert out['img'].shape[:2] == (80, 64) and tuple(out['img_shape']) == (80, 64)
    assert out['ori_shape'] == (40, 32)
    image = np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)
    large = dict(img=image.copy(), img_shape=(70, 100), ori_shape=(70, 100))
    out = fixed_window.ResizeToAtLeast(size=64)(large)
    assert out['img'].shape == (70, 100, 3) and np.array_equal(out['img'], image)
    odd = dict(img=np.zeros((33, 47, 3), np.uint8), img_shape=(33, 47), ori_shape=(33, 47))
    h, w = fixed_window.ResizeToAtLeast(size=(64, 64))(odd)['img'].shape[:2]
    assert h >= 64 and w >= 64 and math.isclose(w / h, 47 / 33, rel_tol=0.05)
