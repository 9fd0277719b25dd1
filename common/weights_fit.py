"""Does a pretrained file fit the model it initialises? Refuse a run that would train half-random.

mmengine loads a backbone's `init_cfg`/`pretrained` file with `strict=False`: a file of another
architecture (torchvision's ResNet-50 into ResNetV1c, whose deep stem it lacks) loads "fine" and
leaves whole layers at their random init, which costs a user a training run to notice.
`must_fit()` watches every state-dict load during model initialisation, logs unexpected keys, and
raises SetupError when a file leaves parameters of the module it is loaded into uninitialised.
Normalisation layers a segmentation backbone adds on top of its classifier (Swin's norm0..3,
PoolFormer's GroupNorms) start at their identity init by design in the recipes, so those are
reported, not refused; so are the tensors a backbone class lists in BY_DESIGN (MAE's), and only those.

`refuse_misfit(cfg)` runs first, before anything is built (checks.preflight): a file whose layout
common.layouts recognises (a torchvision ResNet, an original Swin, a timm ViT...) and that cannot
fit the backbone it initialises is refused with what it is, and the commands it does fit.
"""
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from common import layouts
from common.errors import SetupError


IGNORED_MISSING = ('num_batches_tracked', 'relative_position_index')
# Tensors a backbone's pretrained file lacks by design, by the class of the module it is loaded into.
# mmseg's MAE is BEiT's transformer loaded with MAE's plain-ViT encoder, which has no layer scales
# and no relative-position bias: the recipe starts them at layer scale init_values (1.0: identity) and
# a zero table (MAEAttention keeps its zero init), so the network starts as the pretrained ViT.
BY_DESIGN = {
    'MAE': (re.compile(r'layers\.\d+\.(gamma_1|gamma_2|attn\.relative_position_bias_table)'),
            'layer scales and relative-position tables (the plain ViT that MAE pretrains has none)'),
}


def refuse_misfit(cfg, trust=False):
    """SetupError when the backbone's pretrained file is of a recognised layout that does not fit it."""
    path, backbone, prefix = layouts.backbone_file(cfg)
    if path is None:
        return
    layout = layouts.identify(layouts.read(path, trust))
    why = layouts.misfit(layout, backbone, prefix, path)
    if not why:
        return   # it fits, or nothing here can tell: the load-time audit (must_fit) still checks it
    fitting = [use.command(path) for use in layouts.index() if layouts.fits_exactly(layout, use)]
    where = f'it fits {"; ".join(fitting)}; ' if fitting else ''
    if layout.convert and layout.arch == layouts.signature(backbone):
        made = Path(path).with_name(layouts.converted_name(path))
        where = f'run `python -m {layout.convert} {path}`, then pass --pretrained {made}; '
    raise SetupError(f'the pretrained file {path} does not fit {backbone["type"]}: {why}',
                     f'{where}for this model use the file its recipe names (PRETRAINED auto, see '
                     'pretrain/README.md), or train from scratch with --no-pretrained')


@contextmanager
def must_fit():
    """While active, every load_state_dict (mmengine's and torch's) is audited first (above)."""
    import mmengine.runner.checkpoint as ckpt_module
    import torch
    original_mm, original_torch = ckpt_module.load_state_dict, torch.nn.Module.load_state_dict
    patched_modules = [m for m in list(sys.modules.values())
                       if getattr(m, 'load_state_dict', None) is original_mm]

    def mm_load(module, state_dict, strict=False, logger=None):
        audit(getattr(module, 'module', module), state_dict)
        return original_mm(module, state_dict, strict, logger)

    def torch_load(self, state_dict, strict=True, assign=False):
        audit(self, state_dict)
        return original_torch(self, state_dict, strict, assign)

    for module in patched_modules:
        module.load_state_dict = mm_load
    torch.nn.Module.load_state_dict = torch_load
    try:
        yield
    finally:
        for module in patched_modules:
            module.load_state_dict = original_mm
        torch.nn.Module.load_state_dict = original_torch


def audit(module, state_dict):
    """Log what `state_dict` does not use; refuse it when it leaves `module`'s tensors random."""
    from mmengine.logging import print_log
    expected = set(module.state_dict().keys())
    given = set(state_dict.keys())
    missing = sorted(k for k in expected - given if not k.endswith(IGNORED_MISSING))
    unexpected = sorted(given - expected)
    name = type(module).__name__
    if unexpected:
        print_log(f'[weights] {name}: {len(unexpected)} unexpected keys ignored: {", ".join(unexpected[:8])}'
                  + (' ...' if len(unexpected) > 8 else ''), logger='current')
    norms = _norm_layer_keys(module)
    added_norms = [k for k in missing if k in norms]
    missing = [k for k in missing if k not in norms]
    if added_norms:
        print_log(f'[weights] {name}: {len(added_norms)} normalisation tensors not in the checkpoint start at '
                  f'their identity init, as in the recipe: {", ".join(added_norms[:8])}', logger='current')
    pattern, what = BY_DESIGN.get(name, (None, ''))
    by_design = [k for k in missing if pattern is not None and pattern.fullmatch(k)]
    missing = [k for k in missing if k not in by_design]
    if by_design:
        print_log(f'[weights] {name}: {len(by_design)} tensors not in the checkpoint by design start at the '
                  f'recipe\'s init, {what}: {", ".join(by_design[:4])} ...', logger='current')
    if missing:
        _refuse(name, missing, len(expected))
    print_log(f'[weights] {name}: all {len(expected) - len(added_norms) - len(by_design)} other tensors loaded',
              logger='current')


def _norm_layer_keys(module):
    import torch.nn as nn
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return {f'{prefix}.{key}' if prefix else key
            for prefix, sub in module.named_modules() if isinstance(sub, norm_types)
            for key in sub.state_dict(keep_vars=True) if '.' not in key}


def _refuse(name, missing, total):
    shown = ', '.join(missing[:10]) + (' ...' if len(missing) > 10 else '')
    raise SetupError(
        f'the checkpoint being loaded does not fit {name}: {len(missing)} of its {total} tensors would stay '
        f'randomly initialised ({shown})',
        'use the checkpoint the recipe names (see pretrain/README.md), convert yours to this backbone, '
        'or train from scratch with --no-pretrained')
