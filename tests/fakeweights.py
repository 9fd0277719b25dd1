"""Fake pretrained files in the published key layouts and shapes, and what the tests build from them.

Where only names and shapes matter, each tensor is one number expanded to its shape (`cheap`):
torch.save keeps one element per tensor, so a fake Swin-B or ViT-B costs kilobytes, and every key still
has its own value.
"""
import math

import torch

from common import cli, config, convert_swin, convert_vit, layouts
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


def converted_swin_b(folder):
    """The notes' Swin file (Microsoft's original Swin-B 384 22k), faked in its real layout in `folder`,
    converted by the command: (its state dict, the converted file)."""
    source = swin_original(**SWIN_B)
    torch.save({'model': source}, folder / SWIN_SOURCE)
    return source, convert_swin.main([str(folder / SWIN_SOURCE)])


def converted_vit_b_384(folder):
    """timm's ViT-B/16 384, faked in `folder` (random position embeddings), converted by the command."""
    source = cheap(timm_vit_shapes(), random=['pos_embed'])
    torch.save(source, folder / VIT_SOURCE)
    return source, convert_vit.main([str(folder / VIT_SOURCE)])
