"""What a pretrained file is, read from its tensors' names and shapes, and which scripts it fits.

- `read(path)`: {key: shape} of the state dict in a file; the tensors stay in the file (mmap).
- `identify(shapes)`: the Layout, for the families the scripts' backbones come in and that a file
  of another source can be mistaken for: ResNet (torchvision's stem or the deep stem of ResNetV1c),
  Swin and ViT (mmseg's layout, or the original/timm layout that must be converted first) and
  PoolFormer (an mmpretrain classifier); None for anything else (then nothing here judges the file,
  and the load-time audit of common.weights_fit still does).
- `misfit(layout, backbone, prefix)`: '' when the file's tensors fit the backbone config (the
  `prefix` part of the file, as its init_cfg loads it), else why not; None when no rule here applies.
- `index()`: every command the scripts build (each script's variants), with its backbone config and
  the file PRETRAINED 'auto' names: who uses, or can use, a file (`python -m common.pretrained list`).
- The naming of conversions: the converter a registry entry names, and its output's file name.
"""
import contextlib
import functools
import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common import checkpoints, cli, scripts
from common.errors import SetupError

CONVERTER = re.compile(r'python -m (common\.convert_\w+)')
# mmpretrain's PoolFormer.arch_settings: blocks and widths of each stage (tests compare them).
POOLFORMER_ARCHS = {'s12': ((2, 2, 6, 2), (64, 128, 320, 512)), 's24': ((4, 4, 12, 4), (64, 128, 320, 512)),
                    's36': ((6, 6, 18, 6), (64, 128, 320, 512)), 'm36': ((6, 6, 18, 6), (96, 192, 384, 768)),
                    'm48': ((8, 8, 24, 8), (96, 192, 384, 768))}
RESNET_DEPTHS = {((3, 4, 6, 3), True): 50, ((3, 4, 23, 3), True): 101, ((3, 8, 36, 3), True): 152,
                 ((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34}


def converter(what):
    """'common.convert_vit' where a registry description names `python -m common.convert_vit`, else None."""
    match = CONVERTER.search(what or '')
    return match.group(1) if match else None


def converted_name(source):
    """The file a converter writes for `source` (its default DST): stem + '_mmseg.pth'."""
    return Path(source).stem + '_mmseg.pth'


def source_of(name, files):
    """The source in the registry `files` (common.pretrained.FILES) that `name` is the conversion of, or None."""
    return next((source for source, (_, what, _) in files.items()
                 if converter(what) and converted_name(source) == name), None)


@dataclass(frozen=True)
class Layout:
    what: str              # for people: "torchvision's ResNet-50 (stem conv1.weight)"
    arch: tuple            # what must equal a backbone's signature() for every tensor to load
    window: int = 0        # Swin's attention window (loads into another window, interpolated; not exact)
    convert: str = ''      # 'common.convert_swin': the file must be converted first; arch is the result's
    prefix: str = ''       # 'backbone.' when the tensors are under it (an mmpretrain classifier)


def read(path, trust=False):
    """{key: shape} of the tensors in the state dict of `path` ('state_dict' / 'model' unwrapped,
    a 'module.' prefix removed). SetupError when the file cannot be read safely."""
    import torch
    checkpoint = checkpoints.load(path, trust=trust, what='pretrained file', mmap=zipfile.is_zipfile(path))
    state = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        return {}
    return {k.removeprefix('module.'): tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _count(shapes, pattern):
    """Distinct values of the first group of `pattern` among the keys ('layer1.N.' -> N blocks)."""
    return len({m.group(1) for k in shapes if (m := re.match(pattern, k))})


def _resnet(shapes):
    blocks = tuple(_count(shapes, rf'layer{i}\.(\d+)\.') for i in range(1, 5))
    bottleneck = 'layer1.0.conv3.weight' in shapes
    depth = RESNET_DEPTHS.get((blocks, bottleneck))
    plain_width = shapes.get('layer1.0.conv2.weight' if bottleneck else 'layer1.0.conv1.weight') == (64, 64, 3, 3)
    if depth is None or not plain_width:   # ResNeXt, wide ResNets, other depths
        return None
    if 'stem.0.weight' in shapes:
        return Layout(f'ResNet-{depth} with the deep stem (stem.0.weight: ResNetV1c)', ('ResNet', depth, 'deep'))
    if 'conv1.weight' in shapes:
        return Layout(f"torchvision's ResNet-{depth} (stem conv1.weight)", ('ResNet', depth, 'torchvision'))
    return None


def _swin(shapes, stages, proj, attn):
    """The Swin in either layout: `stages` 'stages'/'layers', `attn` 'attn.w_msa'/'attn'."""
    depths = tuple(_count(shapes, rf'{stages}\.{i}\.blocks\.(\d+)\.') for i in range(4))
    if proj not in shapes or not all(depths):
        return None
    tables = [shapes.get(f'{stages}.{i}.blocks.0.{attn}.relative_position_bias_table') for i in range(4)]
    if None in tables:
        return None
    heads = tuple(t[1] for t in tables)
    window = (math.isqrt(tables[0][0]) + 1) // 2
    width = shapes[proj][0]
    return ('SwinTransformer', width, depths, heads), window


def _vit(shapes, blocks, proj):
    layers = _count(shapes, rf'{blocks}\.(\d+)\.')
    if 'cls_token' not in shapes or proj not in shapes or not layers:
        return None
    grid = math.isqrt(shapes['pos_embed'][1] - 1) if 'pos_embed' in shapes else 0
    width, patch = shapes['cls_token'][-1], shapes[proj][-1]
    return ('VisionTransformer', width, layers, patch), f'width {width}, {layers} layers, patch {patch}, ' \
                                                        f'position grid {grid}x{grid}'


def _poolformer(shapes, prefix):
    layers = tuple(_count(shapes, rf'network\.{i}\.(\d+)\.mlp\.') for i in (0, 2, 4, 6))
    widths = tuple((shapes.get(f'network.{i}.0.mlp.fc2.weight') or (0,))[0] for i in (0, 2, 4, 6))
    if 'patch_embed.proj.weight' not in shapes or not all(layers):
        return None
    arch = next((a for a, sizes in POOLFORMER_ARCHS.items() if sizes == (layers, widths)), None)
    where = "mmpretrain classifier, under 'backbone.'" if prefix else 'tensors at the top level'
    name = f'PoolFormer-{arch.upper()}' if arch else f'a PoolFormer of blocks {list(layers)}, widths {list(widths)}'
    return Layout(f'{name} ({where})', ('mmpretrain.PoolFormer', layers, widths), prefix=prefix)


def identify(shapes):
    """The Layout of a state dict's {key: shape}, or None (see the module docstring)."""
    inner = {k[len('backbone.'):]: v for k, v in shapes.items() if k.startswith('backbone.')}
    prefix = 'backbone.' if inner else ''
    shapes = inner or shapes
    if 'layer1.0.conv1.weight' in shapes:
        return _resnet(shapes)
    if 'network.0.0.mlp.fc1.weight' in shapes:
        return _poolformer(shapes, prefix)
    for stages, proj, attn, convert in (('stages', 'patch_embed.projection.weight', 'attn.w_msa', ''),
                                        ('layers', 'patch_embed.proj.weight', 'attn', 'common.convert_swin')):
        found = _swin(shapes, stages, proj, attn)
        if found:
            arch, window = found
            origin = "Microsoft's original layout" if convert else 'mmseg layout'
            return Layout(f'Swin in {origin}: {describe(arch)}, window {window}', arch, window, convert, prefix)
    for blocks, proj, convert in (('layers', 'patch_embed.projection.weight', ''),
                                  ('blocks', 'patch_embed.proj.weight', 'common.convert_vit')):
        found = _vit(shapes, blocks, proj)
        if found:
            arch, sizes = found
            origin = 'timm/DeiT layout' if convert else 'mmseg layout'
            return Layout(f'ViT in {origin}: {sizes}', arch, 0, convert, prefix)
    return None


def signature(backbone):
    """What `backbone` (a config dict) takes, comparable with Layout.arch; None where no rule here
    knows it. Defaults are mmseg's (SwinTransformer's Swin-T sizes, VisionTransformer's ViT-B)."""
    kind = str(backbone.get('type', '')).removeprefix('mmseg.')
    if kind in ('ResNet', 'ResNetV1c'):
        deep = kind == 'ResNetV1c' or backbone.get('deep_stem', False)
        return 'ResNet', backbone.get('depth'), 'deep' if deep else 'torchvision'
    if kind == 'SwinTransformer':
        return ('SwinTransformer', backbone.get('embed_dims', 96), tuple(backbone.get('depths', (2, 2, 6, 2))),
                tuple(backbone.get('num_heads', (3, 6, 12, 24))))
    if kind == 'VisionTransformer':
        return ('VisionTransformer', backbone.get('embed_dims', 768), backbone.get('num_layers', 12),
                backbone.get('patch_size', 16))
    if kind == 'mmpretrain.PoolFormer' and isinstance(backbone.get('arch', 's12'), str):
        return ('mmpretrain.PoolFormer', *POOLFORMER_ARCHS.get(backbone.get('arch', 's12').lower(), ((), ())))
    return None


def describe(arch):
    """A signature in words."""
    kind = arch[0]
    if kind == 'ResNet':
        stem = 'the deep stem (stem.0.weight, stem.1.weight, ...)' if arch[2] == 'deep' else \
            "torchvision's stem (conv1.weight)"
        return f'ResNet-{arch[1]} with {stem}'
    if kind == 'SwinTransformer':
        return f'embed {arch[1]}, depths {list(arch[2])}, heads {list(arch[3])}'
    if kind == 'VisionTransformer':
        return f'ViT width {arch[1]}, {arch[2]} layers, patch {arch[3]}'
    return f'PoolFormer of blocks {list(arch[1])}, widths {list(arch[2])}'


def misfit(layout, backbone, prefix='', path='FILE'):
    """'' when the file (at `path`) of `layout` fits `backbone` as its init loads it (the `prefix`
    part of the file), else the reason; None when no rule here judges the pair."""
    wanted = signature(backbone)
    if layout is None or wanted is None:
        return None
    if layout.arch[0] != wanted[0]:
        return f'it is {layout.what}; this backbone is a {backbone["type"]}'
    if layout.arch != wanted:
        return f'it is {layout.what}; this backbone is {describe(wanted)}'
    if layout.convert:
        return (f'it is {layout.what}: convert it first, `python -m {layout.convert} {path}` writes '
                f'{converted_name(path)} beside it')
    if prefix and layout.prefix != prefix:
        return f"its tensors are not under '{prefix}' (it is {layout.what}); the script loads that part of the file"
    if layout.prefix and not prefix and wanted[0] != 'SwinTransformer':   # Swin's own init strips 'backbone.'
        return f"its tensors are under '{layout.prefix}' (it is {layout.what}); the script loads the top level"
    return ''


def fits_exactly(layout, use):
    """The file loads whole into this command's backbone, at the same Swin window (no interpolation)."""
    return misfit(layout, use.backbone, use.prefix) == '' and \
        (not layout.window or layout.window == use.backbone.get('window_size', 7))


@dataclass(frozen=True)
class Use:
    script: str            # 'swin'
    argv: tuple            # ('--backbone', 'swin-b-384-in22k'), () for the script's default
    file: str | None       # the file PRETRAINED 'auto' names, or None
    backbone: dict
    prefix: str = ''       # the init_cfg prefix its file is loaded with

    def command(self, pretrained=None):
        extra = ('--pretrained', pretrained) if pretrained else ()
        return ' '.join((f'python train_{self.script}.py',) + self.argv + extra)


def backbone_file(cfg):
    """(path, backbone config, prefix) of the pretrained file that initialises the model's backbone
    (the model's `pretrained`, the backbone's, or its Pretrained init_cfg); path None when none does."""
    model = cfg.get('model', {})
    backbone = model.get('backbone') or {}
    init = backbone.get('init_cfg') or {}
    path = model.get('pretrained') or backbone.get('pretrained') or \
        (init.get('checkpoint') if init.get('type') == 'Pretrained' else None)
    return (path if isinstance(path, str) else None), backbone, (init.get('prefix', '') if path else '')


def _use(name, argv, cfg):
    path, backbone, prefix = backbone_file(cfg)
    return Use(name, tuple(argv), Path(path).name if path else None, backbone, prefix)


@functools.lru_cache(maxsize=2)
def index(root=str(scripts.ROOT)):
    """A Use for the default and every variant (each BACKBONES / HEADS entry) of every train_*.py."""
    found = []
    for name in scripts.all_names(root):
        namespace = vars(scripts.load(name, root))
        choices = [()] + [(cli.flag_name(setting), str(value)) for setting in scripts.VARIANT_SETTINGS
                          if setting in namespace for value in namespace.get(f'{setting}S') or {}
                          if value != namespace[setting]]
        for argv in choices:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    cfg = namespace['build_config'](cli.parse(namespace, list(argv)))
            except SetupError:
                continue
            found.append(_use(name, argv, cfg))
    return tuple(found)

