"""Convert a timm or DeiT ViT checkpoint to the key layout of MMSegmentation's VisionTransformer.

    python -m common.convert_vit SRC [DST]      # DST defaults to SRC's name + '_mmseg.pth'

    python -m common.convert_vit pretrain/jx_vit_large_p16_384-b3be5167.pth   # SETR (ViT-L/16, 384)
    python -m common.convert_vit pretrain/deit_small_patch16_224-cd65a155.pth # ViT/DeiT-S + UPerNet
    python -m common.convert_vit pretrain/deit_base_patch16_224-b5f2ef4d.pth  # ViT/DeiT BACKBONE=deit-b
    python -m common.convert_vit pretrain/jx_vit_base_p16_224-80ecf9dd.pth    # ViT/DeiT BACKBONE=vit-b, DPT
    python -m common.convert_vit pretrain/jx_vit_base_p16_384-83fb41ba.pth    # a ViT-B/16 at 384: no recipe's
        # own weights; with --pretrained for ViT/DeiT vit-b (or deit-b), DPT, Segmenter vit-b

The same mapping as MMSegmentation's tools/model_converters/vit2mmseg.py, which is not in the
wheel: `blocks.N` -> `layers.N`, `norm1/norm2` -> `ln1/ln2`, `attn.qkv` -> `attn.attn.in_proj_`,
`attn.proj` -> `attn.attn.out_proj`, `mlp.fc1` -> `ffn.layers.0.0`, `mlp.fc2` -> `ffn.layers.1`,
`patch_embed.proj` -> `patch_embed.projection`, the final `norm` -> `ln1`; the classifier
(`head.*`) is dropped. A `{'model': ...}` (DeiT) or `{'state_dict': ...}` (timm) wrapper is
unwrapped. The source is read without running code from it (common.checkpoints).

The converted file keeps its source's name plus `_mmseg`, so the name says where it came from and
the source (whose name carries its sha256 prefix) is never overwritten. The recipes' own names for
these files are pretrain/vit_large_p16.pth, pretrain/deit_small_patch16_224-cd65a155.pth,
pretrain/vit_base_patch16_224.pth and (DPT) pretrain/vit-b16_p16_224-80ecf9dd.pth; pass
`--pretrained PATH` to a script to use a file named so.

What the recipes' backbones do not take from the converted file (mmseg behaves the same with
vit2mmseg's output): the patch-embedding bias (mmseg's VisionTransformer has `patch_bias=False`
by default) and, where `final_norm=False`, the final norm `ln1`. Training logs them as unexpected
keys; nothing is left uninitialised.
"""
import argparse
from collections import OrderedDict
from pathlib import Path

from common.errors import SetupError, reported

# Renames inside a transformer block (after `blocks.` -> `layers.`), as vit2mmseg.py does them.
BLOCK_RENAMES = (
    ('.norm1.', '.ln1.'),
    ('.norm2.', '.ln2.'),
    ('.attn.qkv.', '.attn.attn.in_proj_'),      # qkv.weight -> in_proj_weight: same [q; k; v] rows
    ('.attn.proj.', '.attn.attn.out_proj.'),
    ('.mlp.fc1.', '.ffn.layers.0.0.'),
    ('.mlp.fc2.', '.ffn.layers.1.'),
)
DROPPED_PREFIXES = ('head.', 'head_dist.')    # ImageNet classifier(s): no use for segmentation


def unwrap(checkpoint, expected='a timm or DeiT ViT checkpoint'):
    """The state dict inside a checkpoint: DeiT saves {'model': ...}, some timm files {'state_dict': ...}."""
    if not isinstance(checkpoint, dict):
        raise SetupError(f'expected a dict of tensors, found a {type(checkpoint).__name__}',
                         f'pass {expected} (.pth)')
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if checkpoint and all(k.startswith('module.') for k in checkpoint):  # saved from DataParallel
        checkpoint = {k[len('module.'):]: v for k, v in checkpoint.items()}
    return checkpoint


def convert_key(key, renames=BLOCK_RENAMES, dropped=DROPPED_PREFIXES):
    """One timm/DeiT key in mmseg's layout; None for a tensor that is dropped. `renames` (inside a
    block) and `dropped` are ViT's; convert_beit passes BEiT's, whose outer names are the same."""
    if key.startswith(dropped):
        return None
    if key.startswith('norm.'):
        return 'ln1.' + key[len('norm.'):]
    if key.startswith('patch_embed.proj.'):
        return 'patch_embed.projection.' + key[len('patch_embed.proj.'):]
    if key.startswith('blocks.'):
        key = 'layers.' + key[len('blocks.'):]
        for old, new in renames:
            key = key.replace(old, new)
    return key


def convert(state_dict):
    """(converted state dict, dropped keys). Raises SetupError for what is not a plain timm/DeiT ViT."""
    keys = set(state_dict)
    if any(k.startswith('layers.') for k in keys) and not any(k.startswith('blocks.') for k in keys):
        raise SetupError('this checkpoint is already in mmseg layout (it has layers.*, no blocks.*)',
                         'use it as it is: pass it to the script with --pretrained')
    if not {'cls_token', 'pos_embed', 'patch_embed.proj.weight'} <= keys or \
            not any(k.startswith('blocks.') for k in keys):
        raise SetupError('this is not a timm/DeiT VisionTransformer checkpoint (no cls_token, pos_embed, '
                         'patch_embed.proj.weight and blocks.*)',
                         'pass the ImageNet file the recipe names (see the train script docstring)')
    if 'dist_token' in keys:
        raise SetupError('this is a distilled DeiT (it has dist_token: two class tokens); mmseg\'s '
                         'VisionTransformer has one',
                         'use the non-distilled file, e.g. deit_small_patch16_224-cd65a155.pth')
    converted, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = convert_key(key)
        if new_key is None:
            dropped.append(key)
        else:
            converted[new_key] = value
    return converted, dropped


def default_destination(src):
    src = Path(src)
    return src.with_name(src.stem + '_mmseg.pth')


def command(argv, doc, source, what, convert_checkpoint, describe):
    """The command line of every converter here (convert_vit, convert_beit, convert_swin): SRC [DST]
    [--trust-checkpoint]; DST defaults to SRC's name + '_mmseg.pth' and is never SRC itself.
    `convert_checkpoint(loaded file) -> (tensors, dropped keys)`; `describe(tensors, dropped)` ends the
    'wrote DST: N tensors, ...' line. `source` is SRC's help, `what` names the file in errors."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help=f'{source} (a local .pth file)')
    parser.add_argument('dst', nargs='?', help="output file (default: SRC's name + '_mmseg.pth')")
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load SRC with full pickle (can run code from the file): only for files you trust')
    args = parser.parse_args(argv)
    with reported():
        dst = Path(args.dst) if args.dst else default_destination(args.src)
        if dst.resolve() == Path(args.src).resolve():
            raise SetupError(f'DST is SRC ({dst}): the source would be overwritten',
                             'name another output file, or leave DST out')
        import torch
        from common import checkpoints
        converted, dropped = convert_checkpoint(checkpoints.load(args.src, trust=args.trust_checkpoint, what=what))
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.save(converted, dst)
    print(f'wrote {dst}: {len(converted)} tensors, {describe(converted, dropped)}')
    return dst


def _describe(converted, dropped):
    layers = len({k.split('.')[1] for k in converted if k.startswith('layers.')})
    width = converted['cls_token'].shape[-1]
    return f'{layers} layers, width {width}' + (f'; dropped {", ".join(dropped)}' if dropped else '')


def main(argv=None):
    return command(argv, __doc__, 'timm/DeiT ViT checkpoint', 'ViT checkpoint',
                   lambda checkpoint: convert(unwrap(checkpoint)), _describe)


if __name__ == '__main__':
    main()
