"""The pretrained backbone files of the recipes: where each comes from and how to fetch it.

    python -m common.pretrained list              # what is present in pretrain/, what is missing, and
                                                  # for each file there: what it is, the commands using it
    python -m common.pretrained fetch FILE...     # download (progress bar, sha256 check); --all
    python -m common.pretrained readme            # rewrite pretrain/README.md from this table

Files keep their published names. The 8 hex digits at the end of an OpenMMLab or torchvision file
name are the start of its sha256, which is what the fetch checks. An entry whose description names
`python -m common.convert_X` is a source to convert: the converter writes its stem + '_mmseg.pth'.
`list` also reads every other file in pretrain/ (common.layouts): what it is, what it was converted
from or to, the commands whose PRETRAINED 'auto' takes it, the ones it fits with --pretrained, or
why it fits none.
"""
import argparse
import os
import re
from pathlib import Path

from common import layouts
from common.errors import SetupError, reported

PRETRAIN_DIR = Path(__file__).resolve().parents[1] / 'pretrain'
_MMSEG = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain'

# file name -> (url, what it is, scripts that use it)
FILES = {
    'resnet50_v1c-2cccc1ad.pth': (
        'https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth',
        "ResNet-50-V1c ImageNet (open-mmlab://resnet50_v1c)",
        'fcn pspnet deeplabv3 deeplabv3plus upernet gcnet isanet nonlocal dnlnet psanet encnet ccnet danet apcnet dmnet '
        'ann fastfcn pointrend knet sem_fpn'),
    'resnet101_v1c-e67eebb6.pth': (
        'https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth',
        "ResNet-101-V1c ImageNet (open-mmlab://resnet101_v1c)", 'BACKBONE=r101(-d8) variants, sem_fpn r101'),
    'resnet18_v1c-b5776b93.pth': (
        'https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth',
        "ResNet-18-V1c ImageNet (open-mmlab://resnet18_v1c)", 'fcn, pspnet BACKBONE=r18-d8 (no ADE20K recipe)'),
    'resnet50-0676ba61.pth': (
        'https://download.pytorch.org/models/resnet50-0676ba61.pth',
        'torchvision ResNet-50 ImageNet (torchvision://resnet50)', 'mask2former maskformer'),
    'resnet101-63fe2227.pth': (
        'https://download.pytorch.org/models/resnet101-63fe2227.pth',
        'torchvision ResNet-101 ImageNet (torchvision://resnet101)', 'mask2former, maskformer BACKBONE=r101'),
    'resnet50-11ad3fa6.pth': (
        'https://download.pytorch.org/models/resnet50-11ad3fa6.pth',
        "torchvision ResNet-50 ImageNet, IMAGENET1K_V2 weights: not the recipes' (they load the V1 "
        'resnet50-0676ba61.pth), so never taken by PRETRAINED auto',
        'mask2former, maskformer with --pretrained (other pretraining than the reference results)'),
    **{f'mit_{b}_20220624-{h}.pth': (f'{_MMSEG}/segformer/mit_{b}_20220624-{h}.pth',
                                     f'MiT-{b.upper()} ImageNet, converted by mmseg', 'segformer')
       for b, h in [('b0', '7e0fe6dd'), ('b1', '02e5a6a1'), ('b2', '66e8bf70'), ('b3', '13b1141c'),
                    ('b4', 'd588d980'), ('b5', '658746d9')]},
    'swin_tiny_patch4_window7_224_20220317-1cdeb081.pth': (
        f'{_MMSEG}/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth', 'Swin-T ImageNet-1k 224',
        'swin; mask2former, maskformer BACKBONE=swin-t'),
    'swin_tiny_patch4_window7_224_20220308-f41b89d3.pth': (
        f'{_MMSEG}/swin/swin_tiny_patch4_window7_224_20220308-f41b89d3.pth', 'Swin-T ImageNet-1k 224 (the 20220308 release)',
        'knet BACKBONE=swin-t'),
    'swin_small_patch4_window7_224_20220317-7ba6d6dd.pth': (
        f'{_MMSEG}/swin/swin_small_patch4_window7_224_20220317-7ba6d6dd.pth', 'Swin-S ImageNet-1k 224',
        'swin BACKBONE=swin-s; mask2former, maskformer BACKBONE=swin-s'),
    'swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth': (
        f'{_MMSEG}/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth', 'Swin-B ImageNet-22k 384',
        'mask2former BACKBONE=swin-b; swin BACKBONE=swin-b-384-in22k'),
    'swin_large_patch4_window12_384_22k_20220412-6580f57d.pth': (
        f'{_MMSEG}/swin/swin_large_patch4_window12_384_22k_20220412-6580f57d.pth', 'Swin-L ImageNet-22k 384',
        'mask2former BACKBONE=swin-l; swin BACKBONE=swin-l-384-in22k'),
    'swin_base_patch4_window7_224_20220317-e9b98025.pth': (
        f'{_MMSEG}/swin/swin_base_patch4_window7_224_20220317-e9b98025.pth', 'Swin-B ImageNet-1k 224',
        'swin BACKBONE=swin-b'),
    'swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth': (
        f'{_MMSEG}/swin/swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth', 'Swin-B ImageNet-22k 224',
        'swin BACKBONE=swin-b-in22k'),
    'swin_base_patch4_window12_384_20220317-55b0104a.pth': (
        f'{_MMSEG}/swin/swin_base_patch4_window12_384_20220317-55b0104a.pth', 'Swin-B ImageNet-1k 384',
        'swin BACKBONE=swin-b-384'),
    'swin_large_patch4_window7_224_22k_20220412-aeecf2aa.pth': (
        f'{_MMSEG}/swin/swin_large_patch4_window7_224_22k_20220412-aeecf2aa.pth', 'Swin-L ImageNet-22k 224',
        'swin BACKBONE=swin-l-in22k'),
    'swin_large_patch4_window7_224_22k_20220308-d5bdebaf.pth': (
        f'{_MMSEG}/swin/swin_large_patch4_window7_224_22k_20220308-d5bdebaf.pth',
        'Swin-L window 7, ImageNet-22k 224', 'knet BACKBONE=swin-l'),
    'swin_base_patch4_window12_384_22k.pth': (
        'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window12_384_22k.pth',
        "Swin-B ImageNet-22k 384, Microsoft's original release (the weights of mmseg's "
        '..._22k_20220317-e5c09f74.pth): convert with python -m common.convert_swin',
        'mask2former BACKBONE=swin-b; swin BACKBONE=swin-b-384-in22k (converted; auto when e5c09f74 is absent)'),
    'hrnetv2_w18_small-b5a04e21.pth': (
        'https://download.openmmlab.com/pretrain/third_party/hrnetv2_w18_small-b5a04e21.pth',
        'HRNetV2-W18-Small ImageNet (open-mmlab://msra/hrnetv2_w18_small)', 'hrnet'),
    'hrnetv2_w18-00eb2006.pth': (
        'https://download.openmmlab.com/pretrain/third_party/hrnetv2_w18-00eb2006.pth',
        'HRNetV2-W18 ImageNet (open-mmlab://msra/hrnetv2_w18)', 'ocrnet; hrnet BACKBONE=hr18'),
    'hrnetv2_w48-d2186c55.pth': (
        'https://download.openmmlab.com/pretrain/third_party/hrnetv2_w48-d2186c55.pth',
        'HRNetV2-W48 ImageNet (open-mmlab://msra/hrnetv2_w48)', 'ocrnet, hrnet BACKBONE=hr48'),
    'mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth': (
        'https://download.openmmlab.com/mmclassification/v0/mobilenet_v2/'
        'mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth',
        "MobileNetV2 ImageNet, mmcls (mmcls://mobilenet_v2; keys under 'backbone.')", 'mobilenetv2'),
    'resnest101_d2-f3b931b2.pth': (
        'https://download.openmmlab.com/pretrain/third_party/resnest101_d2-f3b931b2.pth',
        'ResNeSt-101 ImageNet (open-mmlab://resnest101)', 'resnest'),
    'stdc1_20220308-5368626c.pth': (f'{_MMSEG}/stdc/stdc1_20220308-5368626c.pth', 'STDCNet1 ImageNet, converted by mmseg',
                                    'stdc'),
    'stdc2_20220308-7dbd9127.pth': (f'{_MMSEG}/stdc/stdc2_20220308-7dbd9127.pth', 'STDCNet2 ImageNet, converted by mmseg',
                                    'stdc BACKBONE=stdc2'),
    **{f'poolformer-{v}_3rdparty_32xb128_in1k_20220414-{h}.pth': (
        f'https://download.openmmlab.com/mmclassification/v0/poolformer/'
        f'poolformer-{v}_3rdparty_32xb128_in1k_20220414-{h}.pth',
        f'PoolFormer-{v.upper()} ImageNet-1k classifier (mmpretrain)', f'poolformer BACKBONE={v}')
       for v, h in [('s12', 'f8d83051'), ('s24', 'd7055904'), ('s36', 'd78ff3e8'), ('m36', 'c55e0949'),
                    ('m48', '9378f3eb')]},
    **{f'{name}_20220308-{h}.pth': (f'{_MMSEG}/twins/{name}_20220308-{h}.pth',
                                    f'Twins {label} ImageNet-1k, converted by mmseg', f'twins BACKBONE={variant}')
       for name, h, label, variant in [
           ('pcpvt_small', 'e638c41c', 'PCPVT-S', 'pcpvt-s'), ('pcpvt_base', '0621964c', 'PCPVT-B', 'pcpvt-b'),
           ('pcpvt_large', '37579dc6', 'PCPVT-L', 'pcpvt-l'), ('alt_gvt_small', '7e1c3695', 'SVT-S', 'svt-s'),
           ('alt_gvt_base', '1b7eb711', 'SVT-B', 'svt-b'), ('alt_gvt_large', 'fb5936f3', 'SVT-L', 'svt-l')]},
    **{f'mscan_{v}_20230227-{h}.pth': (f'{_MMSEG}/segnext/mscan_{v}_20230227-{h}.pth',
                                       f'SegNeXt MSCAN-{v.upper()} ImageNet-1k', f'segnext BACKBONE=mscan-{v}')
       for v, h in [('t', '119e8c9f'), ('s', 'f33ccdf2'), ('b', '3ab7d230'), ('l', 'cef260d4')]},
    **{f'vit_{v}_p16_384_20220308-{h}.pth': (f'{_MMSEG}/segmenter/vit_{v}_p16_384_20220308-{h}.pth',
                                             f'ViT-{v[0].upper()}/16 ImageNet 384 (Segmenter), mmseg layout',
                                             f'segmenter BACKBONE=vit-{v[0]}')
       for v, h in [('tiny', 'cce8c795'), ('small', '410f6037'), ('base', '96dfe169'), ('large', 'd4efb41d')]},
    # Sources to convert with `python -m common.convert_vit FILE` (writes FILE stem + _mmseg.pth).
    'jx_vit_large_p16_384-b3be5167.pth': (
        'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_large_p16_384-b3be5167.pth',
        'timm ViT-L/16 ImageNet 384: convert with python -m common.convert_vit', 'setr (converted)'),
    'jx_vit_base_p16_384-83fb41ba.pth': (
        'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_384-83fb41ba.pth',
        "timm ViT-B/16 ImageNet 384 (no recipe's own weights): convert with python -m common.convert_vit",
        'vit_deit BACKBONE=vit-b/deit-b, dpt, segmenter BACKBONE=vit-b with --pretrained (converted)'),
    'deit_small_patch16_224-cd65a155.pth': (
        'https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth',
        'DeiT-S/16 ImageNet 224: convert with python -m common.convert_vit', 'vit_deit (converted)'),
    'deit_base_patch16_224-b5f2ef4d.pth': (
        'https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth',
        'DeiT-B/16 ImageNet 224: convert with python -m common.convert_vit', 'vit_deit BACKBONE=deit-b (converted)'),
    'jx_vit_base_p16_224-80ecf9dd.pth': (
        'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth',
        'timm ViT-B/16 ImageNet 224: convert with python -m common.convert_vit',
        'vit_deit BACKBONE=vit-b, dpt (converted)'),
    **{f'convnext-{arch}_3rdparty_{data}_20220301-{h}.pth': (
        f'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/'
        f'convnext-{arch}_3rdparty_{data}_20220301-{h}.pth',
        f'ConvNeXt-{label} ImageNet-{classes} classifier (mmpretrain)', f'convnext BACKBONE={variant}')
       for arch, data, h, label, classes, variant in [
           ('tiny', '32xb128-noema_in1k', '795e9634', 'T', '1k', 'tiny'),
           ('small', '32xb128-noema_in1k', '303e75e3', 'S', '1k', 'small'),
           ('base', '32xb128-noema_in1k', '2a0ee547', 'B', '1k', 'base'),
           ('base', 'in21k', '262fd037', 'B', '21k', 'base-in21k'),
           ('large', 'in21k', 'e6e0ea0a', 'L', '21k', 'large-in21k'),
           ('xlarge', 'in21k', '08aa5ddc', 'XL', '21k', 'xlarge-in21k')]},
    # Sources to convert with `python -m common.convert_beit FILE` (writes FILE stem + _mmseg.pth; the
    # recipes call their converted files pretrain/beit_*_pt22k_ft22k.pth and mae_pretrain_vit_base_mmcls.pth).
    'beit_base_patch16_224_pt22k_ft22k.pth': (
        'https://unilm.blob.core.windows.net/beit/beit_base_patch16_224_pt22k_ft22k.pth',
        'BEiT-B/16 ImageNet-22k 224 (self-supervised, then fine-tuned): convert with python -m common.convert_beit',
        'beit (converted)'),
    'beit_large_patch16_224_pt22k_ft22k.pth': (
        'https://unilm.blob.core.windows.net/beit/beit_large_patch16_224_pt22k_ft22k.pth',
        'BEiT-L/16 ImageNet-22k 224 (self-supervised, then fine-tuned): convert with python -m common.convert_beit',
        'beit BACKBONE=beit-l (converted)'),
    'mae_pretrain_vit_base.pth': (
        'https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth',
        'MAE ViT-B/16 ImageNet-1k self-supervised encoder: convert with python -m common.convert_beit',
        'mae (converted)'),
}

# A registered file -> the registered source whose conversion holds the same weights: PRETRAINED
# 'auto' takes that conversion when the file is absent, and the run says so (checks.preflight).
SAME_WEIGHTS = {
    'swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth': 'swin_base_patch4_window12_384_22k.pth',
}


def hash_prefix(name):
    """The sha256 prefix in a published file name ('...-2cccc1ad.pth' -> '2cccc1ad'), or None."""
    match = re.search(r'-([0-9a-f]{8})\.pth$', name)
    return match.group(1) if match else None


def path_of(name):
    return PRETRAIN_DIR / name


def resolve(setting, default_file):
    """The PRETRAINED setting as a path: 'auto' -> pretrain/<default_file>; None -> None (scratch)."""
    if setting == 'auto':
        return f'pretrain/{default_file}' if default_file else None
    return setting


def init_cfg(setting, default_file, prefix=None):
    """A backbone `init_cfg` loading the file the PRETRAINED setting names (resolve), or None (random
    init: --no-pretrained). `prefix`: the key prefix to take from the file ('backbone.')."""
    path = resolve(setting, default_file)
    if path is None:
        return None
    init = dict(type='Pretrained', checkpoint=path)
    if prefix:
        init['prefix'] = prefix
    return init


def fetch_command(name):
    return f'python -m common.pretrained fetch {name}'


def stand_in(path):
    """Where `path` names a SAME_WEIGHTS file that is absent: our conversion of the same source
    weights beside it, if that is there; else None."""
    source = SAME_WEIGHTS.get(Path(path).name)
    candidate = Path(path).with_name(layouts.converted_name(source)) if source else None
    return str(candidate) if candidate and candidate.is_file() else None


def _make_command(source, here):
    return f'`python -m {layouts.converter(FILES[source][1])} {here}/{source}`'


def require(path, auto=False):
    """The file to load for `path`: itself, or (auto: PRETRAINED 'auto' named it) its stand_in.
    Stops before anything is built when neither is there."""
    if path is None or os.path.isfile(path):
        return path
    if auto and stand_in(path):
        return stand_in(path)
    name, here = Path(path).name, Path(path).parent
    source = layouts.source_of(name, FILES)
    if name in FILES:
        how = f'fetch it with `{fetch_command(name)}` ({FILES[name][0]})'
        if name in SAME_WEIGHTS:
            original = SAME_WEIGHTS[name]
            how += (f'; or, with PRETRAINED auto, the same weights from {original}: '
                    f'`{fetch_command(original)}` then {_make_command(original, here)}')
    elif source:
        how = f'make it with `{fetch_command(source)}` then {_make_command(source, here)}'
    else:
        how = 'put the file there (see pretrain/README.md)'

    raise SetupError(f'pretrained file not found: {path}',
                     f'{how}, or train from scratch with --no-pretrained')


def stand_in_note(path, used):
    source = SAME_WEIGHTS[Path(path).name]
    return (f'PRETRAINED auto: {path} is not there; using {used}, the same weights converted from {source} '
            f'by {layouts.converter(FILES[source][1])}')


def fetch(name, force=False):
    if name not in FILES:
        raise SetupError(f'unknown pretrained file {name}', 'see `python -m common.pretrained list`')
    dest = path_of(name)
    if dest.exists() and not force:
        print(f'{name}: present')
        return dest
    url = FILES[name][0]
    print(f'{name}: downloading {url}')
    from common.download import download
    prefix = hash_prefix(name)
    return download(url, dest, checksum=f'sha256:{prefix}' if prefix else None)


def readme_text():
    rows = '\n'.join(
        f'| `{name}` | {what} | {used} | [{url.split("/")[2]}]({url}) | `{hash_prefix(name) or "-"}` |'
        for name, (url, what, used) in FILES.items())
    return f"""# pretrain/

Pretrained backbone weights, each under its published file name. The train scripts stop before
building anything when the file their recipe needs is missing, and print the command that fetches
it. `--no-pretrained` trains from scratch instead.

    python -m common.pretrained list          # present / missing
    python -m common.pretrained fetch FILE    # download with a progress bar, check the sha256
    python -m common.pretrained fetch --all

The hash column is the sha256 prefix that the publisher put in the file name; the fetch checks it.
`list` also reads every file in pretrain/, listed here or not (another release of a backbone, a
converted file), and says what it is, the commands that use it or that it fits with --pretrained,
or why it fits none.
This file is generated by `python -m common.pretrained readme` from `common/pretrained.py`.

| file | what | used by | URL | sha256 prefix |
|---|---|---|---|---|
{rows}
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='cmd', required=True)
    sub.add_parser('list')
    fetch_p = sub.add_parser('fetch')
    fetch_p.add_argument('names', nargs='*')
    fetch_p.add_argument('--all', action='store_true')
    fetch_p.add_argument('--force', action='store_true', help='download again even if present')
    sub.add_parser('readme')
    args = parser.parse_args(argv)
    if args.cmd == 'list':
        for name, (url, what, used) in FILES.items():
            state = 'present' if path_of(name).exists() else 'missing'
            print(f'{state:8} {name:58} {used}')
        from common import inventory
        with reported():
            print('\n' + '\n'.join(inventory.lines(PRETRAIN_DIR, FILES, SAME_WEIGHTS)))
    elif args.cmd == 'readme':
        (PRETRAIN_DIR / 'README.md').write_text(readme_text())
        print(f'wrote {PRETRAIN_DIR / "README.md"}')
    else:
        names = list(FILES) if args.all else args.names
        if not names:
            parser.error('name the files to fetch, or --all')
        with reported():
            for name in names:
                fetch(name, force=args.force)


if __name__ == '__main__':
    main()

