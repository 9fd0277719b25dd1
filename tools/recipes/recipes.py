"""Every ADE20K recipe of MMSegmentation 1.2.2 (the configs its wheel ships) and the command that builds it.

    python -m tools.recipes.zoo --recipes               # the "all recipes" table (docs/recipes.md)
    python -m tools.recipes.zoo --recipes --dump DIR    # DIR/<config file> for each, and DIR/recipes.json

A recipe here is a script's REFERENCE or one of its REFERENCES entries (common.scripts): the official
config file, the settings its command passes (the variant; the entry's `crop_size` where it differs
from CROP_SIZE; the entry's `flags` and `settings`, e.g. {'MAX_ITERS': 160_000}) and its numbers. `compare` says where the config our command builds
differs from the official one in what must be equal: the model (where its weights come from aside),
the optimizer wrapper, the LR schedule, max_iters, and the train/val/test datasets (pipelines
included) and samplers. Batch, workers, intervals, hooks and logs are the user's defaults and are not
compared. Any other difference is a declared deviation: a script's DEVIATIONS, or an entry's
`deviations`, {dotted key prefix: why}, each explained in the script's docstring.
"""
import contextlib
import io
import json
from pathlib import Path

from common import cli, config, scripts

# What must equal the official config (dotted paths into the config dict).
COMPARED = ('model', 'optim_wrapper', 'param_scheduler', 'train_cfg.max_iters',
            'train_dataloader.dataset', 'train_dataloader.sampler', 'val_dataloader.dataset',
            'val_dataloader.sampler', 'test_dataloader.dataset', 'test_dataloader.sampler')


def configs_dir():
    import mmseg
    return Path(mmseg.__file__).parent / '.mim' / 'configs'


def official_configs():
    """'fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py', ...: every ADE20K recipe file in the wheel."""
    root = configs_dir()
    return sorted(str(p.relative_to(root)) for p in root.glob('*/*ade20k*.py') if not p.parent.name.startswith('_'))


def official(path):
    from mmengine.config import Config
    return Config.fromfile(str(configs_dir() / path)).to_dict()


def listed(root=scripts.ROOT):
    """Each recipe the scripts name, in script order: dict(config, script, settings, reference, deviations)."""
    found = []
    for name in scripts.all_names(root):
        module = scripts.load(name, root)
        namespace = vars(module)
        own = dict(getattr(module, 'DEVIATIONS', {}))
        variant_names = [n for n in scripts.VARIANT_SETTINGS if n in namespace]
        variants = [scripts.variant_of(namespace)] + [v for v in getattr(module, 'REFERENCES', {})
                                                       if v != scripts.variant_of(namespace)]
        for variant in variants:
            chosen = variant if isinstance(variant, tuple) else (variant,)
            picked = {n: v for n, v in zip(variant_names, chosen) if v != namespace[n]}
            for entry in scripts.reference_entries(namespace, variant):
                if not entry.get('config') or any(r['config'] == entry['config'] for r in found):
                    continue  # a default variant's recipe may be both REFERENCE and a REFERENCES entry
                crop = tuple(entry.get('crop_size', namespace['CROP_SIZE']))
                settings = {**picked, **({'CROP_SIZE': crop} if crop != tuple(namespace['CROP_SIZE']) else {}),
                            **entry.get('flags', {}), **entry.get('settings', {})}
                found.append(dict(config=entry['config'], script=name, module=module, settings=settings,
                                  reference=entry, deviations={**own, **entry.get('deviations', {})}))
        # The multi-scale test configs (`*_ms.py`) of a recipe: the same training, evaluated with --tta.
        for variant, path in getattr(module, 'TTA_CONFIGS', {}).items():
            trained = next(r for r in found if r['script'] == name and
                           scripts.variant_of(namespace, r['settings']) == variant)
            found.append(dict(trained, config=path, evaluate=['--eval-only', 'CKPT', '--tta']))
    return found


def published():
    """{config: (mIoU, mIoU_ms)} of the ADE20K results in the wheel's metafile.yaml files (None where absent)."""
    import re
    import yaml
    found = {}
    for meta in configs_dir().glob('*/metafile.yaml'):
        for model in (yaml.safe_load(meta.read_text()) or {}).get('Models', []):
            results = model.get('Results') or {}
            for result in results if isinstance(results, list) else [results]:
                if result.get('Dataset') == 'ADE20K':
                    metrics = result.get('Metrics', {})
                    config = model['Config'].removeprefix('configs/')
                    found.setdefault(config, []).append(((metrics.get('mIoU'), metrics.get('mIoU(ms+flip)')),
                                                         model.get('Weights') or ''))
    # Some README rows link the wrong schedule's config (OCRNet's and DeepLabV3+ R-101's 160k rows name
    # the 80k configs), so a config can appear twice: keep the row whose weights are of its schedule.
    chosen = {}
    for config, rows in found.items():
        schedule = re.search(r'[-_](\d+k)[-_]', config)
        own = [numbers for numbers, weights in rows if schedule and f'_{schedule.group(1)}_' in weights]
        chosen[config] = (own or [rows[0][0]])[0]
    return chosen


def _flag_value(value):
    return ','.join(map(str, value)) if isinstance(value, tuple) else str(value)


def argv(recipe):
    return [part for name, value in recipe['settings'].items() for part in (cli.flag_name(name), _flag_value(value))]


def command(recipe):
    """The command line; a multi-scale test config's evaluates the trained checkpoint (CKPT) with --tta."""
    return ' '.join([f"python train_{recipe['script']}.py", *argv(recipe), *recipe.get('evaluate', [])])


def build(recipe):
    """The complete config our command builds for the recipe (what --dump-config writes)."""
    namespace = vars(recipe['module'])
    with contextlib.redirect_stdout(io.StringIO()):  # the scripts' notes (e.g. a pretrained file missing)
        return recipe['module'].build_config(cli.parse(namespace, argv(recipe)))


def _plain(value):
    """Tuples as lists, so a config read from a file and one built in Python compare equal."""
    return json.loads(json.dumps(value, default=str))


def _get(cfg, dotted):
    for part in dotted.split('.'):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def compared(cfg):
    """The parts of a config that must equal the recipe's, weights sources removed, as plain data."""
    out = {key: _plain(_get(cfg, key)) for key in COMPARED}
    out['model'] = _plain(config.without_pretrained(cfg['model']))
    for split in ('train', 'val', 'test'):  # ADE20KDataset's own default, written out or not
        dataset = out[f'{split}_dataloader.dataset'] or {}
        dataset = dataset.get('dataset', dataset) if dataset.get('type') == 'RepeatDataset' else dataset
        if dataset.get('type') == 'ADE20KDataset':
            dataset.setdefault('reduce_zero_label', _default('mmseg.datasets', 'ADE20KDataset', 'reduce_zero_label'))
    wrapper = out['optim_wrapper'] or {}
    if wrapper.get('type') == 'AmpOptimWrapper':
        wrapper.setdefault('loss_scale', _default('mmengine.optim', 'AmpOptimWrapper', 'loss_scale'))
    return out


def _default(module, name, argument):
    """A class's own default for an argument: a config that writes it out equals one that leaves it."""
    import importlib
    import inspect
    cls = getattr(importlib.import_module(module), name)
    return inspect.signature(cls.__init__).parameters[argument].default


def differences(a, b, path=''):
    """Dotted paths ('model.decode_head.channels', 'param_scheduler[1].end') where a and b differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k), b.get(k), f'{path}.{k}' if path else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{path}[{i}]')]
    return [] if a == b else [path]


def covers(declared, path):
    """A declared key covers a difference at it or below it ('model' covers 'model.backbone.depth')."""
    return path == declared or path.startswith(declared + '.') or path.startswith(declared + '[')


def compare(recipe, ours=None):
    """(undeclared differences, declared deviations that no difference needs) of one recipe."""
    ours = compared(ours or build(recipe))
    theirs = compared(official(recipe['config']))
    found = [d for key in COMPARED for d in differences(ours[key], theirs[key], key)]
    declared = recipe['deviations']
    undeclared = [d for d in found if not any(covers(k, d) for k in declared)]
    unused = [k for k in declared if not any(covers(k, d) for d in found)]
    return undeclared, unused


def dump(out_dir):
    """DIR/<official file name> (our resolved config, as --dump-config writes it: loadable by
    MMSegmentation's own tools) for each listed recipe, and DIR/recipes.json."""
    from common import stock_tools  # imports torch: only where configs are written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in listed():
        config.dump(stock_tools.portable(build(recipe)), out_dir / Path(recipe['config']).name)
        rows.append(dict(config=recipe['config'], command=command(recipe),
                         mIoU=recipe['reference'].get('mIoU'), mIoU_ms=recipe['reference'].get('mIoU_ms'),
                         deviations=[dict(key=k, why=v) for k, v in recipe['deviations'].items()]))
    missing = sorted(set(official_configs()) - {r['config'] for r in rows})
    (out_dir / 'recipes.json').write_text(json.dumps(rows, indent=2) + '\n')
    return rows, missing


def table(rows=None):
    """Markdown: every official ADE20K config, its command here (or none yet) and its reference mIoU."""
    rows = rows if rows is not None else [dict(config=r['config'], command=command(r), mIoU=r['reference'].get('mIoU'),
                                                 mIoU_ms=r['reference'].get('mIoU_ms')) for r in listed()]
    by_config = {r['config']: r for r in rows}
    lines = ['| official config | command | mIoU (ss / ms+flip) |', '|---|---|---|']
    for path in sorted(set(official_configs()) | set(by_config)):
        row = by_config.get(path)
        if row is None:
            lines.append(f'| `{path}` | none yet | |')
            continue
        miou = '-' if row.get('mIoU') is None else str(row['mIoU'])
        if row.get('mIoU_ms'):
            miou += f" / {row['mIoU_ms']}"
        lines.append(f"| `{path}` | `{row['command']}` | {miou} |")
    return '\n'.join(lines) + '\n'
