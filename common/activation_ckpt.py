"""Activation checkpointing (ACTIVATION_CKPT): which backbones can, and how a run does it.

Each block of the backbone keeps only its inputs during the forward pass and computes its inside
again during the backward pass: the backbone's activation memory shrinks to about one block's, for
about one more forward pass of the backbone per step. What is learned does not change: the same seed
gives bit-identical losses, weights and BN statistics on a CPU in fp32 (tests/test_activation_ckpt.py).

`apply()` writes it in the config (so --dump-config shows it) as `activation_ckpt`: the backbone's block
classes (BLOCKS, by backbone type); a backbone not in BLOCKS is refused there, naming the scripts
that have it, before anything is built. `install()` wraps those blocks of the run's own model
(speed.FastRunner.wrap_model, before DDP and torch.compile), each forward in torch's non-reentrant
checkpoint. Neither of the ready-made ways trains the same model:

- the backbones' own `with_cp=True` (mmseg's ResNet, Swin, ViT, MiT...; mmpretrain's ConvNeXt) and
  mmengine's `activation_checkpointing` key both call torch's reentrant checkpoint. Its recomputation
  runs each BatchNorm again, so BN's running statistics take two updates a step (what evaluation
  normalises with drifts); it sums gradients in another order than the graph it replaces (other
  roundings); and an input that requires no grad (a frozen stem's output) leaves the block's
  parameters without gradient (mmseg's blocks skip checkpointing there; mmengine's wrapper does not).
- here: the non-reentrant checkpoint keeps the autograd graph (the same sums in the same order) and
  replays the forward's autocast state and RNG (dropout, drop path); recomputed BatchNorms get their
  buffers back as the forward left them.

mmseg's and mmengine's checkpoint stay stock (nothing replaced): a config written by --dump-config
carries `activation_ckpt`, which MMSegmentation's own tools do not read (they train without it).
"""
import contextlib
import functools
import importlib

from common.errors import SetupError

_RESNET = ('mmseg.models.backbones.resnet.BasicBlock', 'mmseg.models.backbones.resnet.Bottleneck')
_VIT = ('mmseg.models.backbones.vit.TransformerEncoderLayer',)  # BEiT's and MAE's layers are subclasses
# Backbone type -> the classes of its blocks (subclasses included: ResNeSt's and ResNeXt's Bottleneck).
BLOCKS = {
    'ResNet': _RESNET, 'ResNetV1c': _RESNET, 'ResNetV1d': _RESNET, 'ResNeXt': _RESNET, 'ResNeSt': _RESNET,
    'HRNet': _RESNET,
    'MobileNetV2': ('mmseg.models.utils.inverted_residual.InvertedResidual',),
    'SwinTransformer': ('mmseg.models.backbones.swin.SwinBlock',),
    'VisionTransformer': _VIT, 'BEiT': _VIT, 'MAE': _VIT,
    'MixVisionTransformer': ('mmseg.models.backbones.mit.TransformerEncoderLayer',),
    'PCPVT': ('mmseg.models.backbones.twins.GSAEncoderLayer',),
    'SVT': ('mmseg.models.backbones.twins.GSAEncoderLayer', 'mmseg.models.backbones.twins.LSAEncoderLayer'),
    'MSCAN': ('mmseg.models.backbones.mscan.MSCABlock',),
    'mmpretrain.ConvNeXt': ('mmpretrain.models.backbones.convnext.ConvNeXtBlock',),
    'mmpretrain.PoolFormer': ('mmpretrain.models.backbones.poolformer.PoolFormerBlock',),
}

# The scripts whose every variant has it (tests/test_activation_ckpt.py keeps this true): the refusal names them.
SCRIPTS = ('ann', 'apcnet', 'beit', 'ccnet', 'convnext', 'danet', 'deeplabv3', 'deeplabv3plus', 'dmnet',
           'dnlnet', 'dpt', 'encnet', 'fastfcn', 'fcn', 'gcnet', 'hrnet', 'isanet', 'knet', 'mae', 'mask2former',
           'maskformer', 'mobilenetv2', 'nonlocal', 'ocrnet', 'pointrend', 'poolformer', 'psanet', 'pspnet',
           'resnest', 'segformer', 'segmenter', 'segnext', 'sem_fpn', 'setr', 'swin', 'twins', 'upernet',
           'vit_deit')

KEY = 'activation_ckpt'  # the config's key; mmengine's own `activation_checkpointing` is not used (above)


def backbone_type(cfg):
    return (cfg.get('model', {}).get('backbone') or {}).get('type')


def apply(cfg, on, script='this script'):
    """Write activation checkpointing in `cfg` (a config dict) when `on`; returns cfg. A backbone
    without it is refused, naming the scripts that have it."""
    if not on:
        return cfg
    kind = backbone_type(cfg)
    if kind not in BLOCKS:
        raise SetupError(f'--activation-ckpt (ACTIVATION_CKPT): train_{script}.py\'s backbone ({kind}) has no '
                         'activation checkpointing here',
                         'drop --activation-ckpt (a smaller --batch-per-gpu or --crop-size saves memory too); '
                         'the scripts that have it: ' + ', '.join(f'train_{name}.py' for name in SCRIPTS))
    cfg[KEY] = dict(module='backbone', blocks=list(BLOCKS[kind]))
    return cfg


def describe(cfg):
    """What the banner says of it; None when off."""
    spec = cfg.get(KEY)
    if not spec:
        return None
    names = ', '.join(path.rsplit('.', 1)[1] for path in spec['blocks'])
    return f'activation checkpointing: every {names} of the {backbone_type(cfg)} backbone recomputed in the backward pass'


def _block_classes(spec):
    found = []
    for path in spec['blocks']:
        module, name = path.rsplit('.', 1)
        found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


def install(model, spec):
    """Wrap the forward of every block of `model.<spec['module']>` (the outermost ones) in a
    non-reentrant checkpoint. Returns how many; none is an error (the spec names no block of this model)."""
    part = model.get_submodule(spec['module'])
    classes = _block_classes(spec)
    wrapped = []

    def visit(module):
        if isinstance(module, classes):
            _wrap(module)
            wrapped.append(module)
            return
        for child in module.children():
            visit(child)
    visit(part)
    if not wrapped:
        raise RuntimeError(f'activation checkpointing: no {", ".join(spec["blocks"])} in model.{spec["module"]} '
                           f'({type(part).__name__})')
    return len(wrapped)


def _wrap(block):
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.utils.checkpoint import checkpoint
    forward = block.forward
    norms = [m for m in block.modules() if isinstance(m, _BatchNorm)]
    contexts = functools.partial(_contexts, norms)

    @functools.wraps(forward)
    def checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():  # evaluation: nothing is kept for a backward pass anyway
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)
    block.forward = checkpointed  # on this model's block only (as mmengine's own wrapper does)


def _contexts(norms):
    """torch.utils.checkpoint's context_fn: nothing around the forward; around the recomputation,
    BatchNorm buffers restored afterwards (running mean and variance, batches counted)."""
    return contextlib.nullcontext(), _buffers_kept(norms)


@contextlib.contextmanager
def _buffers_kept(norms):
    import torch
    buffers = [b for norm in norms for b in norm.buffers()]
    kept = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, kept):
                buffer.copy_(value)
