"""Convert an original Microsoft Swin Transformer checkpoint to the key layout of MMSegmentation's
SwinTransformer.

    python -m common.convert_swin SRC [DST]     # DST defaults to SRC's name + '_mmseg.pth'

    python -m common.convert_swin pretrain/swin_base_patch4_window12_384_22k.pth
        # -> pretrain/swin_base_patch4_window12_384_22k_mmseg.pth: the weights of mmseg's own
        #    swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth (train_swin.py --backbone
        #    swin-b-384-in22k, train_mask2former.py --backbone swin-b), which PRETRAINED 'auto' takes
        #    when that file is absent (common.pretrained.SAME_WEIGHTS)

The same mapping as MMSegmentation's tools/model_converters/swin2mmseg.py (in the wheel under
mmseg/.mim/tools/), with which mmseg made its converted Swin files: `layers.N` -> `stages.N`,
`attn.` -> `attn.w_msa.`, `mlp.fc1` -> `ffn.layers.0.0`, `mlp.fc2` -> `ffn.layers.1`,
`patch_embed.proj` -> `patch_embed.projection`; the patch-merging `downsample.reduction` weight and
`downsample.norm` are reordered from the original's [x0, x1, x2, x3] concatenation to nn.Unfold's
channel order; the classifier (`head.*`) is dropped. A `{'model': ...}` (the original release) or
`{'state_dict': ...}` wrapper is unwrapped. The source is read without running code from it.

Two things swin2mmseg.py keeps that have no place in mmseg's SwinTransformer are dropped as well, so
the output holds exactly that backbone's tensors: the `attn_mask` buffers (the original's shifted-
window masks for its pretraining resolution; mmseg computes the mask per forward) and the final
`norm` (the classifier's; mmseg's backbone has one norm per output, norm0..norm3, which start at
their identity init as with mmseg's own converted files).
"""
from collections import OrderedDict

from common import convert_vit
from common.errors import SetupError

DROPPED_PREFIXES = ('head.', 'norm.')     # ImageNet classifier and its final norm (see above)
PATCH_ORDER = [0, 2, 1, 3]                # original [x0 x1 x2 x3] -> nn.Unfold's (0,0) (0,1) (1,0) (1,1)


def _unfold_reduction_order(weight):
    out_channels, in_channels = weight.shape
    weight = weight.reshape(out_channels, 4, in_channels // 4)
    return weight[:, PATCH_ORDER, :].transpose(1, 2).reshape(out_channels, in_channels)


def _unfold_norm_order(weight):
    in_channels = weight.shape[0]
    weight = weight.reshape(4, in_channels // 4)
    return weight[PATCH_ORDER, :].transpose(0, 1).reshape(in_channels)


def convert_item(key, value):
    """One original key and tensor in mmseg's layout; None for a tensor that is dropped."""
    if key.startswith(DROPPED_PREFIXES) or key.endswith('.attn_mask'):
        return None
    if key.startswith('patch_embed.proj.'):
        return 'patch_embed.projection.' + key[len('patch_embed.proj.'):], value
    if not key.startswith('layers.'):
        return key, value                  # absolute_pos_embed (ape models): mmseg reshapes it on load
    if '.attn.' in key:
        key = key.replace('.attn.', '.attn.w_msa.')
    elif '.mlp.fc1.' in key:
        key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.')
    elif '.mlp.fc2.' in key:
        key = key.replace('.mlp.fc2.', '.ffn.layers.1.')
    elif '.downsample.reduction.' in key:
        value = _unfold_reduction_order(value)
    elif '.downsample.norm.' in key:
        value = _unfold_norm_order(value)
    return 'stages.' + key[len('layers.'):], value


def convert(state_dict):
    """(converted state dict, dropped keys). Raises SetupError for what is not an original Swin."""
    keys = set(state_dict)
    if any(k.startswith('stages.') for k in keys) and not any(k.startswith('layers.') for k in keys):
        raise SetupError('this checkpoint is already in mmseg layout (it has stages.*, no layers.*)',
                         'use it as it is: pass it to the script with --pretrained')
    if 'patch_embed.proj.weight' not in keys or not any(k.startswith('layers.') and '.blocks.' in k
                                                        and k.endswith('.attn.qkv.weight') for k in keys):
        raise SetupError('this is not an original Swin Transformer checkpoint (no patch_embed.proj.weight '
                         'and layers.N.blocks.M.attn.qkv.weight)',
                         'pass a file of the Microsoft Swin-Transformer release, e.g. '
                         'swin_base_patch4_window12_384_22k.pth')
    converted, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        item = convert_item(key, value)
        if item is None:
            dropped.append(key)
        else:
            converted[item[0]] = item[1]
    return converted, dropped


def _summary(dropped):
    masks = [k for k in dropped if k.endswith('.attn_mask')]
    named = [k for k in dropped if k not in masks]
    parts = ([', '.join(named)] if named else []) + ([f'{len(masks)} attn_mask buffers'] if masks else [])
    return '; dropped ' + ', '.join(parts) if parts else ''


def _describe(converted, dropped):
    depths = [len({k.split('.')[3] for k in converted if k.startswith(f'stages.{i}.blocks.')})
              for i in range(len({k.split('.')[1] for k in converted if k.startswith('stages.')}))]
    width = converted['patch_embed.projection.weight'].shape[0]
    return f'depths {depths}, width {width}{_summary(dropped)}'


def main(argv=None):
    return convert_vit.command(
        argv, __doc__, 'original Swin Transformer checkpoint', 'Swin checkpoint',
        lambda checkpoint: convert(convert_vit.unwrap(checkpoint, 'an original Swin Transformer checkpoint')),
        _describe)


if __name__ == '__main__':
    main()
