"""Convert a BEiT or MAE checkpoint to the key layout of MMSegmentation's BEiT and MAE backbones.

    python -m common.convert_beit SRC [DST]     # DST defaults to SRC's name + '_mmseg.pth'

    python -m common.convert_beit pretrain/beit_base_patch16_224_pt22k_ft22k.pth   # BEiT-B + UPerNet
    python -m common.convert_beit pretrain/beit_large_patch16_224_pt22k_ft22k.pth  # BEiT BACKBONE=beit-l
    python -m common.convert_beit pretrain/mae_pretrain_vit_base.pth               # MAE ViT-B + UPerNet

The mapping of MMSegmentation's tools/model_converters/beit2mmseg.py, which is not in the wheel and
which the BEiT and MAE READMEs use for both: `blocks.N` -> `layers.N`, `norm1/norm2` -> `ln1/ln2`,
`mlp.fc1` -> `ffn.layers.0.0`, `mlp.fc2` -> `ffn.layers.1`, `patch_embed.proj` ->
`patch_embed.projection`. The attention keys (`attn.qkv`, `attn.proj`; BEiT's `attn.q_bias`,
`attn.v_bias` and `attn.relative_position_bias_table`), the layer scales `gamma_1/gamma_2`,
`cls_token` and MAE's `pos_embed` keep their names. A `{'model': ...}` (BEiT's and MAE's files) or
`{'state_dict': ...}` wrapper is unwrapped; the source is read without running code from it.

Where this differs from beit2mmseg.py (no tensor a recipe's backbone loads is affected):
- the classifier (`head.*`, and `fc_norm.*`, the norm of its pooled input) is dropped, and the final
  `norm` is named `ln1`, the name of mmseg's final norm. beit2mmseg keeps them under their own names,
  where no mmseg module reads them; the recipes build no final norm (final_norm=False) either way.
- beit2mmseg also writes the patch embedding a second time under its old name: not here.
- the `relative_position_index` buffers are dropped: mmseg derives them from the window (and drops
  a file's on loading, common/fixed_window.py).
- a relative-position table shared by all blocks (`rel_pos_bias.relative_position_bias_table`, in
  BEiT's pretraining-only files) is copied to every layer, as the BEiT repository's fine-tuning code
  loads it; the recipes' `_pt22k_ft22k` files already have one per block.

The converted file keeps its source's name plus `_mmseg`. The recipes' own names for these files are
pretrain/beit_base_patch16_224_pt22k_ft22k.pth (BEiT-L: beit_large_...) and
pretrain/mae_pretrain_vit_base_mmcls.pth; pass `--pretrained PATH` to a script to use a file named so.

What the recipes' backbones do not take from a converted file: the final norm `ln1` of MAE's file
(final_norm=False; training logs it as unexpected). MAE's file has no layer scales and no
relative-position tables (MAE pretrains a plain ViT): mmseg's MAE starts them at layer scale 1.0 and
bias 0, so it starts as the pretrained ViT, and common/weights_fit.py accepts exactly those missing.
"""
import re
from collections import OrderedDict

from common import convert_vit
from common.convert_vit import unwrap
from common.errors import SetupError

BLOCK_RENAMES = (    # inside a block, after `blocks.` -> `layers.`, as beit2mmseg.py renames them
    ('.norm1.', '.ln1.'),
    ('.norm2.', '.ln2.'),
    ('.mlp.fc1.', '.ffn.layers.0.0.'),
    ('.mlp.fc2.', '.ffn.layers.1.'),
)
DROPPED_PREFIXES = ('head.', 'fc_norm.')      # the ImageNet classifier and its pooled-feature norm
SHARED_TABLE = 'rel_pos_bias.relative_position_bias_table'
_BLOCK = re.compile(r'^blocks\.(\d+)\.')


def convert_key(key):
    """One BEiT/MAE key in mmseg's layout; None for a tensor that is dropped (the index tables are
    rebuilt by the model)."""
    if key.endswith('relative_position_index'):
        return None
    return convert_vit.convert_key(key, BLOCK_RENAMES, DROPPED_PREFIXES)


def convert(state_dict):
    """(converted state dict, dropped keys). Raises SetupError for what is not a BEiT/MAE ViT."""
    keys = set(state_dict)
    if any(k.startswith('layers.') for k in keys) and not any(k.startswith('blocks.') for k in keys):
        raise SetupError('this checkpoint is already in mmseg layout (it has layers.*, no blocks.*)',
                         'use it as it is: pass it to the script with --pretrained')
    layers = sorted({int(m.group(1)) for m in map(_BLOCK.match, keys) if m})
    if not {'cls_token', 'patch_embed.proj.weight'} <= keys or not layers:
        raise SetupError('this is not a BEiT or MAE VisionTransformer checkpoint (no cls_token, '
                         'patch_embed.proj.weight and blocks.*)',
                         'pass the file the recipe names (see the train script docstring)')
    converted, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        if key == SHARED_TABLE:  # one table for every block: each layer gets its own copy
            for layer in layers:
                converted[f'layers.{layer}.attn.relative_position_bias_table'] = value.clone()
            continue
        new_key = convert_key(key)
        if new_key is None:
            dropped.append(key)
        else:
            converted[new_key] = value
    return converted, dropped


def describe(converted):
    """'12 layers, width 768, relative-position tables 732x12 per layer' (or 'no ... (MAE)')."""
    layers = len({k.split('.')[1] for k in converted if k.startswith('layers.')})
    width = converted['cls_token'].shape[-1]
    table = converted.get('layers.0.attn.relative_position_bias_table')
    tables = (f'relative-position tables {table.shape[0]}x{table.shape[1]} per layer' if table is not None
              else 'no relative-position tables (MAE: they start at 0)')
    grid = converted.get('pos_embed')
    position = f', position grid of {grid.shape[1] - 1} patches' if grid is not None else ''
    return f'{layers} layers, width {width}, {tables}{position}'


def main(argv=None):
    def line(converted, dropped):
        return describe(converted) + (f'; dropped {", ".join(dropped[:6])}{" ..." if len(dropped) > 6 else ""}'
                                      if dropped else '')
    return convert_vit.command(argv, __doc__, 'BEiT or MAE checkpoint', 'BEiT/MAE checkpoint',
                               lambda checkpoint: convert(unwrap(checkpoint)), line)


if __name__ == '__main__':
    main()
