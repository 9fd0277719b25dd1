"""The pretrained backbone files of the recipes: where each comes from and how to fetch it.

    python -m common.pretrained list              # what is present in pretrain/, what is missing
    python -m common.pretrained fetch FILE...     # download (progress bar, sha256 check); --all
    python -m common.pretrained readme            # rewrite pretrain/README.md from this table

Files keep their published names. The 8 hex digits at the end of an OpenMMLab or torchvision file
name are the start of its sha256, which is what the fetch checks.
"""
import argparse
import os
import re
import sys
from pathlib import Path

from common.errors import SetupError

PRETRAIN_DIR = Path(__file__).resolve().parents[1] / 'pretrain'
_MMSEG = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain'

# file name -> (url, what it is, scripts that use it)
FILES = {
    'resnet50_v1c-2cccc1ad.pth': (
        'https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth',
        "ResNet-50-V1c ImageNet (open-mmlab://resnet50_v1c)", 'fcn pspnet deeplabv3plus upernet'),
    'resnet101_v1c-e67eebb6.pth': (
        'https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth',
        "ResNet-101-V1c ImageNet (open-mmlab://resnet101_v1c)", 'BACKBONE=r101 variants'),
    'resnet50-0676ba61.pth': (
        'https://download.pytorch.org/models/resnet50-0676ba61.pth',
        'torchvision ResNet-50 ImageNet (torchvision://resnet50)', 'mask2former'),
    'resnet101-63fe2227.pth': (
        'https://download.pytorch.org/models/resnet101-63fe2227.pth',
        'torchvision ResNet-101 ImageNet (torchvision://resnet101)', 'mask2former BACKBONE=r101'),
    **{f'mit_{b}_20220624-{h}.pth': (f'{_MMSEG}/segformer/mit_{b}_20220624-{h}.pth',
                                     f'MiT-{b.upper()} ImageNet, converted by mmseg', 'segformer')
       for b, h in [('b0', '7e0fe6dd'), ('b1', '02e5a6a1'), ('b2', '66e8bf70'), ('b3', '13b1141c'),
                    ('b4', 'd588d980'), ('b5', '658746d9')]},
    'swin_tiny_patch4_window7_224_20220317-1cdeb081.pth': (
        f'{_MMSEG}/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth', 'Swin-T ImageNet-1k 224',
        'mask2former BACKBONE=swin-t'),
    'swin_small_patch4_window7_224_20220317-7ba6d6dd.pth': (
        f'{_MMSEG}/swin/swin_small_patch4_window7_224_20220317-7ba6d6dd.pth', 'Swin-S ImageNet-1k 224',
        'mask2former BACKBONE=swin-s'),
    'swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth': (
        f'{_MMSEG}/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth', 'Swin-B ImageNet-22k 384',
        'mask2former BACKBONE=swin-b'),
    'swin_large_patch4_window12_384_22k_20220412-6580f57d.pth': (
        f'{_MMSEG}/swin/swin_large_patch4_window12_384_22k_20220412-6580f57d.pth', 'Swin-L ImageNet-22k 384',
        'mask2former BACKBONE=swin-l'),
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


def fetch_command(name):
    return f'python -m common.pretrained fetch {name}'


def require(path):
    """Stop before anything is built when a pretrained file is missing."""
    if path is None or os.path.isfile(path):
        return
    name = Path(path).name
    how = (f'fetch it with `{fetch_command(name)}` ({FILES[name][0]})' if name in FILES else
           'put the file there (see pretrain/README.md)')
    raise SetupError(f'pretrained file not found: {path}',
                     f'{how}, or train from scratch with --no-pretrained')


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
    elif args.cmd == 'readme':
        (PRETRAIN_DIR / 'README.md').write_text(readme_text())
        print(f'wrote {PRETRAIN_DIR / "README.md"}')
    else:
        names = list(FILES) if args.all else args.names
        if not names:
            parser.error('name the files to fetch, or --all')
        try:
            for name in names:
                fetch(name, force=args.force)
        except SetupError as err:
            print(f'ERROR: {err}', file=sys.stderr)
            sys.exit(2)


if __name__ == '__main__':
    main()

