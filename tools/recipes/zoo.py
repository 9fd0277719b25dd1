"""The table of scripts in README.md and of all recipes in docs/recipes.md, generated from the scripts.

    python -m tools.recipes.zoo                        # print the markdown table of scripts
    python -m tools.recipes.zoo --write                # rewrite both tables: README.md's (scripts) and
                                                       # docs/recipes.md's (all recipes)
    python -m tools.recipes.zoo --recipes              # print the table of all official ADE20K recipes
    python -m tools.recipes.zoo --recipes --dump DIR   # DIR/<official file name>: the config our command
                                                       # builds for it (Config.fromfile loads it); DIR/recipes.json

Reference numbers come from each script's REFERENCE (which mirrors the shared reference file);
what a model needs is read from its config: scoped types (mmdet., mmpretrain.), heads that call
compiled mmcv ops, and pretrained files that must be converted first.
"""
import argparse
import re
from pathlib import Path

from common import cli, config, scripts
from tools.recipes import recipes

ROOT = Path(__file__).resolve().parents[2]
README, RECIPES_PAGE = ROOT / 'README.md', ROOT / 'docs' / 'recipes.md'
MARK, END = '<!-- SCRIPTS-TABLE -->', '<!-- SCRIPTS-TABLE-END -->'
RECIPES_MARK, RECIPES_END = '<!-- RECIPES-TABLE -->', '<!-- RECIPES-TABLE-END -->'
# Config types whose forward pass reaches a compiled (or mmcv.ops) kernel.
OPS = {'PSAHead': 'mmcv PSAMask op', 'mmdet.MSDeformAttnPixelDecoder': 'mmcv MultiScaleDeformableAttention (CUDA)',
       'mmdet.FocalLoss': 'mmcv sigmoid_focal_loss (CUDA)', 'PointHead': 'mmcv.ops point_sample',
       'CCHead': 'mmcv.ops CrissCrossAttention'}


def needs(cfg):
    found = [f'{pkg}' for pkg in config.required_packages(cfg)]
    types = config.types_in(cfg)
    found += [op for kind, op in OPS.items() if kind in types]
    found += [f'converted checkpoint ({Path(p).name})' for p in config.pretrained_paths(cfg)
              if p.endswith('_mmseg.pth')]
    return ', '.join(found) or '-'


def rows():
    for path in sorted(ROOT.glob('train_*.py')):
        module = scripts.load(path)
        ref = module.REFERENCE
        cfg = module.build_config(cli.parse(vars(module), []))
        title = module.__doc__.strip().splitlines()[0].split(' on ADE20K')[0].rstrip('.:, ')
        miou = '-' if ref.get('mIoU') is None else f"{ref['mIoU']}"
        if ref.get('mIoU_ms'):
            miou += f" / {ref['mIoU_ms']}"
        iters = cfg['train_cfg']['max_iters']
        yield (f'`{path.name}`', re.sub(r'\s+', ' ', title), f"`{ref['config'].split('/')[-1]}`", miou,
               f'{iters // 1000}k', needs(cfg))


def table():
    head = ('| script | trains | recipe mirrored | reference mIoU (ss / ms+flip) | iters | needs beyond mmseg |\n'
            '|---|---|---|---|---|---|\n')
    return head + '\n'.join('| ' + ' | '.join(row) + ' |' for row in rows()) + '\n'


def _replace(path, mark, end, table_text):
    """Rewrite what lies between the two marker lines of the file at `path`."""
    before, found, rest = path.read_text().partition(mark + '\n')
    _, found_end, after = rest.partition(end + '\n')
    if not (found and found_end):
        raise SystemExit(f'{path.relative_to(ROOT)} lacks the {mark} ... {end} markers')
    path.write_text(before + mark + '\n' + table_text + end + '\n' + after)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--write', action='store_true',
                        help="rewrite README.md's table of scripts and docs/recipes.md's of all recipes")
    parser.add_argument('--recipes', action='store_true', help='the table of every official ADE20K recipe')
    parser.add_argument('--dump', metavar='DIR', help='with --recipes: write each resolved config and recipes.json')
    args = parser.parse_args(argv)
    if args.dump:
        rows, missing = recipes.dump(args.dump)
        print(f'wrote {len(rows)} configs and recipes.json into {args.dump}'
              + (f'; {len(missing)} official configs have no command yet' if missing else ''))
        return
    if not args.write:
        print(recipes.table() if args.recipes else table())
        return
    _replace(README, MARK, END, table())
    _replace(RECIPES_PAGE, RECIPES_MARK, RECIPES_END, recipes.table())
    print(f'wrote the table of scripts into {README} and the table of recipes into {RECIPES_PAGE}')


if __name__ == '__main__':
    main()
