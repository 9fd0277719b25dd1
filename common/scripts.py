"""A train_*.py as data: load it, read its settings, its variant and its reference numbers.

The script protocol, documented here once. A `train_<model>.py` at the repository root defines, at
module level, and runs nothing at import:

  must
    __doc__          what it trains, the recipe it mirrors with its mIoU, its deviations and launch
                     lines; the first line is its title (tools.recipes.zoo: the README's script table) and
                     the whole text is the `--help` description (common.cli)
    settings         UPPER_SNAKE constants of type bool, int, float, str, tuple or None, one per line,
                     each with a trailing `# comment`: each becomes a flag with that comment as its
                     help (common.cli). Every script has DATA_ROOT WORK_DIR CROP_SIZE BATCH_PER_GPU
                     MAX_ITERS VAL_INTERVAL LR PRECISION SEED (tests/test_scripts.py); the settings
                     every script shares without writing them out are cli.COMMON_SETTINGS. A setting
                     may be annotated (`LR: float | None = None`) so that an optional number parses
                     as a number.
    REFERENCE        dict: the default variant's recipe, `config` (the path under mmseg's configs/)
                     and its published numbers (mIoU, mIoU_ms, mem_gb, fps, total_batch, crop_size);
                     read by reference_for (below: the banner, summary.json, metrics.json, the
                     benchmark table), tools.recipes.zoo, tools.bench.vs_stock and tests/test_recipes.py
    build_config(s)  settings (a SimpleNamespace from cli.parse) -> the complete config dict
    main(argv=None)  `s = cli.parse(globals(), argv, doc=__doc__)`, then `runtime.run(build_config, s)`
  may
    BACKBONE, HEAD   the variant settings (VARIANT_SETTINGS), each picking from a table named after it
                     (BACKBONES, HEADS; cli.choose): `bench.sh model:variant`, summary.json's `variant`
    REFERENCES       {variant: dict like REFERENCE, or a list of them}: the published numbers of the
                     other recipes, keyed by the variant setting's value, or by (BACKBONE, HEAD) where
                     a script has both; an entry for another schedule (or batch) of a variant says so
                     in its `settings`, e.g. settings={'MAX_ITERS': 160_000} (reference_for: a run
                     shows that entry's numbers only with those settings); `flags` are settings its
                     command passes that do not select it (a run without them still shows its
                     numbers and the banner says where it differs), as does a `crop_size` unlike
                     CROP_SIZE; `deviations` {dotted key: why} as DEVIATIONS (tools.recipes.recipes)
    PRETRAINED       'auto' (the variant's file in pretrain/, common.pretrained.resolve), a path, or None
    DEVIATIONS       {dotted config key: why}: where the config differs from the recipe's in what
                     tools.recipes.recipes compares (a key covers what is under it), each also in __doc__;
                     a REFERENCES entry may add its own `deviations` the same way
    SMOKE_TEST_FLAGS list of flags that shrink a model too large for the CPU smoke tests
    DEMO_SETTINGS    dict of its settings that `--demo` sets over cli.DEMO_SETTINGS (train_fcn.py: the
                     ResNet-18 variant and a shorter schedule, so that `make demo` is quick on a CPU)
    TTA_CONFIGS      {variant: config}: the recipe's multi-scale test file (`*_ms.py`: the same training,
                     evaluated with --eval-only CKPT --tta; tools.recipes.recipes)
Constants that are dicts or lists (the variant tables, the REFERENCE* data) are not flags.
"""
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTING = re.compile(r'^[A-Z][A-Z0-9_]*$')
FLAG_TYPES = (bool, int, float, str, tuple, type(None))
# Module constants that describe the script rather than set it up (never flags).
NOT_SETTINGS = {'DEVIATIONS', 'SMOKE_TEST_FLAGS', 'REFERENCE', 'DEMO_SETTINGS'}
# The settings that pick one of a script's recipes (each script has one or both).
VARIANT_SETTINGS = ('BACKBONE', 'HEAD')


def load(name, root=ROOT):
    """Import train_<name>.py ('fcn', 'train_fcn', 'train_fcn.py' or a path); nothing runs at import."""
    path = Path(name)
    if path.suffix != '.py':
        stem = path.name if path.name.startswith('train_') else f'train_{path.name}'
        path = path.with_name(f'{stem}.py')
    path = path if path.is_absolute() else Path(root) / path
    if not path.is_file():
        raise FileNotFoundError(f'no script {path}')
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_names(root=ROOT):
    """'fcn', 'pspnet', ...: every train_*.py at the root, sorted."""
    return sorted(p.stem.removeprefix('train_') for p in Path(root).glob('train_*.py'))


def settings_of(namespace):
    """The settings of a script module: its UPPER_SNAKE constants of flag-able types, in order."""
    return {name: value for name, value in namespace.items()
            if SETTING.match(name) and isinstance(value, FLAG_TYPES) and name not in NOT_SETTINGS}


def variant_setting(namespace):
    """The setting a one-word variant names (bench.sh's `model:variant`, summary.json's `variant`):
    BACKBONE, or HEAD in a script that picks its recipe by head only (FastFCN, SETR...); None."""
    return next((name for name in VARIANT_SETTINGS if name in namespace), None)


def variant_name(namespace):
    """The value of variant_setting in `namespace` (a script module's, or a run's settings: vars(s)),
    e.g. 'mit-b0'. What summary.json, metrics.json, the ONNX sidecar and the benchmark table record."""
    setting = variant_setting(namespace)
    return namespace[setting] if setting else None


def variant_of(namespace, settings=None):
    """The recipe variant `settings` select in a script: the value of its one variant setting
    ('mit-b5'), a tuple of both for a script with BACKBONE and HEAD (('svt-l', 'uperhead')), or None.
    Settings missing from `settings` take the script's defaults."""
    defaults = settings_of(namespace)
    settings = settings or {}
    chosen = tuple(settings.get(name, defaults[name]) for name in VARIANT_SETTINGS if name in defaults)
    return None if not chosen else chosen[0] if len(chosen) == 1 else chosen


def reference_entries(namespace, variant):
    """The published recipes of `variant`: REFERENCE first for the script's default variant, then its
    REFERENCES entry or entries (a dict, or a list of dicts for several schedules)."""
    listed = (namespace.get('REFERENCES') or {}).get(variant) or []
    entries = [listed] if isinstance(listed, dict) else list(listed)
    if variant == variant_of(namespace):
        entries.insert(0, namespace.get('REFERENCE') or {})
    return entries


def reference_for(namespace, settings=None):
    """The reference numbers of the recipe `settings` select: among the entries of their variant
    (variant_of; reference_entries), the one whose own `settings` (e.g. {'MAX_ITERS': 160_000} for a
    variant's 160k recipe, {'BATCH_PER_GPU': 1} for SETR-MLA 8x1) all equal the run's, else the one
    that names none (the variant's recipe at the script's default schedule; the banner says where the
    run differs from it). A variant with no published numbers gets only the recipe's total batch, so
    no other variant's mIoU, memory or fps is shown as if it were this one's. An entry names its own
    total_batch or crop_size where its recipe's differ from the default's."""
    reference = namespace.get('REFERENCE') or {}
    settings = {**settings_of(namespace), **(settings or {})}
    entries = reference_entries(namespace, variant_of(namespace, settings))
    matching = [e for e in entries if e.get('settings') and
                all(settings.get(k) == v for k, v in e['settings'].items())]
    plain = [e for e in entries if not e.get('settings')]
    chosen = (matching or plain or [None])[0]
    inherited = {k: v for k, v in reference.items() if k == 'total_batch'}
    return {**inherited, **chosen} if chosen else inherited
