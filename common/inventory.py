"""The second part of `python -m common.pretrained list`: every file found in pretrain/, what it is.

For each file: whether the registry (common.pretrained.FILES) has it, what it was converted from or
to, the commands whose PRETRAINED 'auto' takes it (by name, or in place of an absent file of the same
weights: SAME_WEIGHTS), the commands it fits with --pretrained (read from its tensors:
common.layouts), or why it fits none. The registry is passed in, so this module does not import
common.pretrained (which calls it).
"""
import dataclasses

from common import layouts
from common.errors import SetupError

OTHER_WEIGHTS = ("fits with --pretrained (not the recipe's own file: its reference numbers were trained "
                 'from other weights):')


def files_in(directory):
    """The weight files in `directory`: not README.md, hidden files or unfinished downloads (.part)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name != 'README.md'
                  and not p.name.startswith('.') and not p.name.endswith('.part'))


def _commands(title, uses, pretrained=None):
    return [f'  {title}'] + [f'    {use.command(pretrained)}' for use in uses] if uses else []


def _why_none(layout, uses, shapes):
    """Why a file of `layout` (None: not recognised) fits no command."""
    if layout is None:
        shown = ', '.join(list(shapes)[:3]) + (', ...' if len(shapes) > 3 else '')
        return (f'its {len(shapes)} tensors ({shown or "none"}) are in no layout recognised here (ResNet, Swin, '
                'ViT, PoolFormer), and its name is not in the registry')
    family = [use for use in uses if (layouts.signature(use.backbone) or ('',))[0] == layout.arch[0]]
    near = [why for use in family if layouts.signature(use.backbone) == layout.arch
            for why in [layouts.misfit(layout, use.backbone, use.prefix)] if why]
    if near:
        return near[0]
    sizes = sorted({layouts.describe(layouts.signature(use.backbone)) for use in family})
    return f'it is {layout.what}; no script builds that' + \
        (f' (the scripts\' {layout.arch[0]} backbones: {"; ".join(sizes)})' if sizes else '')


def describe(path, uses, files, same_weights):
    """The lines of one file (see the module docstring)."""
    name, here = path.name, path.parent
    entry, source = files.get(name), layouts.source_of(name, files)
    twin = next((f for f, original in same_weights.items() if layouts.converted_name(original) == name), None)
    convert = layouts.converter(entry[1]) if entry else None
    lines = [name]
    if entry:
        lines.append(f'  registered: {entry[1]}')
    elif source:
        lines.append(f'  not registered: converted from {source} by '
                     f'`python -m {layouts.converter(files[source][1])} pretrain/{source}`')
    else:
        lines.append('  not registered')
    made = layouts.converted_name(name)
    if convert:
        state = 'present' if (here / made).is_file() else f'not made yet: `python -m {convert} pretrain/{name}`'
        lines.append(f'  converted to: {made} ({state})')
    try:
        shapes = layouts.read(path)
    except SetupError as err:
        return lines + [f'  fits nothing: {err.what}']
    layout = layouts.identify(shapes)
    if layout:
        lines.append(f'  layout: {layout.what}')
    twin_here = bool(twin) and (here / twin).is_file()
    auto = [u for u in uses if u.file == name or (twin and not twin_here and u.file == twin)]
    same = [u for u in uses if twin_here and u.file == twin]
    other = [u for u in uses if u not in auto and u not in same and layout and layouts.fits_exactly(layout, u)]
    if twin and not twin_here:
        lines.append(f'  same weights as {twin}, which is absent: PRETRAINED auto takes this file in its place '
                     '(the run says so)')
    lines += _commands('used by (PRETRAINED auto):', auto)
    lines += _commands(f'same weights as {twin} (present: PRETRAINED auto takes that one); with --pretrained:',
                       same, f'pretrain/{name}')
    lines += _commands(OTHER_WEIGHTS, other, f'pretrain/{name}')
    if layout and layout.convert and not (auto or same or other):
        twins = [f for f, original in same_weights.items() if original == name]
        auto_note = f' (PRETRAINED auto takes it where {", ".join(twins)} is absent)' if twins else ''
        if (here / made).is_file():
            lines.append(f'  no script loads this layout: the scripts use its conversion {made}, listed under '
                         f'its name{auto_note}')
        else:
            converted = dataclasses.replace(layout, convert='', prefix='')
            lines += _commands(f'no script loads this layout; converted, {made} fits these{auto_note}:',
                               [u for u in uses if layouts.fits_exactly(converted, u)], f'pretrain/{made}')
    elif not (auto or same or other):
        lines.append(f'  fits nothing: {_why_none(layout, uses, shapes)}')
    return lines


def lines(directory, files, same_weights):
    """Every file of `directory` described, or a line saying there are none."""
    found = files_in(directory)
    if not found:
        return [f'no weight files in {directory}']
    uses = layouts.index()
    out = [f'{len(found)} files in {directory}: what each is and the commands that use it']
    for path in found:
        out += describe(path, uses, files, same_weights)
    return out
