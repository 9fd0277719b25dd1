"""Reading and adjusting a config tree (the dict a script's build_config returns).

Nothing here knows a model: these walk the tree and find or change nodes by their keys.
"""
import copy
import functools
from pathlib import Path


def walk(node, visit):
    """Call `visit(d)` on every dict in the tree, depth first."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            walk(value, visit)


def types_in(cfg):
    """Every `type` named in the tree."""
    found = set()
    walk(cfg, lambda node: found.add(node.get('type')))
    found.discard(None)
    return found


def pretrained_paths(cfg):
    """Every weight file the model's initialisation will read."""
    found = []

    def visit(node):
        if isinstance(node.get('pretrained'), str):
            found.append(node['pretrained'])
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            found.append(node['checkpoint'])
    walk(cfg.get('model', {}), visit)
    return found


def replace_pretrained(cfg, old, new):
    """Make the model's initialisation read `new` where it would read `old`."""
    def visit(node):
        if node.get('pretrained') == old:
            node['pretrained'] = new
        if node.get('type') == 'Pretrained' and node.get('checkpoint') == old:
            node['checkpoint'] = new
    walk(cfg.get('model', {}), visit)


def required_packages(cfg):
    """Packages named by scoped types in the config ('mmdet.DiceLoss' -> mmdet)."""
    scopes = {kind.split('.')[0] for kind in types_in(cfg) if isinstance(kind, str) and '.' in kind}
    return sorted(scopes & {'mmdet', 'mmpretrain'})


def sync_bn_to_bn(cfg):
    """PyTorch's SyncBatchNorm runs only on GPUs; on a CPU (tests, the demo, gloo DDP) use BN. In eval
    mode SyncBN computes what BN does, so offline use (evaluation, ONNX, FLOPs) takes BN too."""
    def visit(node):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
    walk(cfg, visit)
    return cfg


def without_pretrained(node, keys=('pretrained', 'init_cfg')):
    """A copy of the tree without where its weights come from (`pretrained` files, `init_cfg`): a
    model built from it reads no file (a checkpoint or nothing gives its weights)."""
    if isinstance(node, dict):
        return {k: without_pretrained(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, (list, tuple)):
        return type(node)(without_pretrained(v, keys) for v in node)
    return node


_TEXTS = {}  # a few configs' formatted text, by their content
_TEXTS_KEPT = 4


def for_runner(cfg):
    """The run's mmengine Config (RunConfig), formatted once per content. mmengine formats the whole
    config with yapf in about eight places a run (the environment log, TensorBoard, each checkpoint's
    meta, the dumped config), about 0.3 s each on a CPU for FCN's; the same content, the same text."""
    return _run_config_class()(cfg)


@functools.cache
def _run_config_class():
    """Made on first use: mmengine is imported by a run, not by this module."""
    from mmengine.config import Config

    class RunConfig(Config):
        @property
        def pretty_text(self):
            key = (repr(self._cfg_dict.to_dict()), self._format_python_code)
            if key not in _TEXTS:
                _TEXTS[key] = super().pretty_text
                while len(_TEXTS) > _TEXTS_KEPT:
                    del _TEXTS[next(iter(_TEXTS))]
            return _TEXTS[key]

    RunConfig.__module__, RunConfig.__qualname__ = __name__, 'RunConfig'  # pickled by name: __getattr__
    return RunConfig


def __getattr__(name):
    """common.config.RunConfig, where pickle looks for it (PEP 562)."""
    if name == 'RunConfig':
        return _run_config_class()
    raise AttributeError(name)


def dump(cfg, path):
    """The complete resolved config as a file `mmengine.Config.fromfile` loads."""
    from mmengine.config import Config
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Config(copy.deepcopy(cfg)).dump(path)
    return path


def add_imports(cfg, *modules):
    """Add `modules` to the config's custom_imports (its imports may be a string or a list), so that
    a config written from the run builds elsewhere too."""
    imports = cfg.setdefault('custom_imports', dict(imports=[], allow_failed_imports=False))
    if isinstance(imports['imports'], str):
        imports['imports'] = [imports['imports']]
    imports['imports'] += [m for m in modules if m not in imports['imports']]
