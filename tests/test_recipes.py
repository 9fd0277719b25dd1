"""Each recipe a script names (its REFERENCE and REFERENCES entries) builds the official MMSegmentation
1.2.2 config of that name (the configs in the installed wheel) in what matters, and every official ADE20K
config has such a command. tools.recipes.recipes.compare says what is compared (model without its weights
source, optimizer wrapper, LR schedule, max_iters, datasets with their pipelines, samplers) and what may
differ (the user's defaults: batch, workers, intervals, hooks, logs); anything else must be a declared
deviation ({dotted key: why} in the script's DEVIATIONS or the entry's `deviations`), and a declared
deviation nothing needs is stale. For each script's default the built network is compared too
(parameter count, names and shapes).
"""
import json
import os

import pytest

from conftest import SCRIPTS, load_script


def official(config):
    import mmseg
    from mmengine.config import Config
    path = os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'configs', config)
    return Config.fromfile(path).to_dict()


def ours(module):
    from common import cli
    return module.build_config(cli.parse(vars(module), []))


def plain(value):
    """Tuples as lists, so a config read from a file and one built in Python compare equal."""
    return json.loads(json.dumps(value, default=str))


def build(model_cfg):
    """Build as mmengine does (common.infer.model.build: a ConfigDict, tuples kept, SyncBN as BN, no
    weight file read)."""
    from common.infer.model import build
    return build(model_cfg, on='cpu')


def _inner(dataset):
    """The dataset inside a RepeatDataset wrapper (PoolFormer's recipe), or the dataset itself."""
    return dataset.get('dataset', dataset) if dataset.get('type') == 'RepeatDataset' else dataset


from tools.recipes import recipes as _recipes  # noqa: E402  (conftest put the repository on sys.path)

RECIPES = _recipes.listed()


@pytest.mark.parametrize('recipe', RECIPES, ids=[r['config'] for r in RECIPES])
def test_recipe_builds_the_official_config(recipe):
    undeclared, unused = _recipes.compare(recipe)
    assert not undeclared, f"{_recipes.command(recipe)} differs from {recipe['config']} at {undeclared}"
    assert not unused, f"declared deviations that nothing differs in (stale): {unused}"
    for key, why in recipe['deviations'].items():
        assert why.strip(), key


def test_every_official_config_has_a_command():
    named = {r['config'] for r in RECIPES}
    assert len(_recipes.official_configs()) == 184  # MMSegmentation 1.2.2's ADE20K recipes
    assert set(_recipes.official_configs()) <= named, sorted(set(_recipes.official_configs()) - named)


def test_reference_numbers_are_the_metafiles():
    """The mIoU a recipe reports is the one the wheel's metafile.yaml publishes for that config."""
    published = _recipes.published()
    for recipe in RECIPES:
        if recipe['config'] in published:
            ref = recipe['reference']
            assert (ref.get('mIoU'), ref.get('mIoU_ms')) == published[recipe['config']], recipe['config']


@pytest.fixture(scope='module', params=SCRIPTS)
def pair(request):
    module = load_script(request.param)
    ref = official(module.REFERENCE['config'])
    mine = ours(module)
    deviations = dict(getattr(module, 'DEVIATIONS', {}))
    return module, ref, mine, deviations


@pytest.mark.slow
def test_built_model_matches(pair):
    module, ref, mine, deviations = pair
    if any(_recipes.covers('model', key) for key in deviations):
        pytest.skip('documented model deviation')
    a, b = build(mine['model']), build(ref['model'])
    shapes_a = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    assert shapes_a == shapes_b
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_data_is_ade20k_at_the_crop(pair):
    module, ref, mine, deviations = pair
    for split in ('train_dataloader', 'val_dataloader'):
        assert mine[split]['dataset'].get('reduce_zero_label', True) is True
        assert _inner(mine[split]['dataset'])['type'] == 'ADE20KDataset'
    if 'val_evaluator' not in deviations:
        assert plain(mine['val_evaluator']) == plain(ref['val_evaluator'])
    assert mine['model']['data_preprocessor']['size'] == tuple(module.CROP_SIZE)


def test_user_defaults_are_the_only_runtime_changes(pair):
    module, ref, mine, deviations = pair
    assert mine['train_dataloader']['batch_size'] == 2
    assert mine['train_cfg']['val_interval'] == 4000
    hook = mine['default_hooks']['checkpoint']
    assert hook['interval'] == 4000 and hook['max_keep_ckpts'] == 3 and hook['save_best'] == 'mIoU'
    if 'custom_imports' not in deviations:
        assert plain(mine.get('custom_imports')) == plain(ref.get('custom_imports'))


@pytest.mark.parametrize('name', [n for n in SCRIPTS if hasattr(load_script(n), 'REFERENCES')])
def test_listed_variant_references_are_recipes_of_the_wheel(name):
    """Each REFERENCES entry names a variant the script builds, a config file the mmseg wheel ships,
    and the mIoU the script's docstring quotes for it (one source of truth, checked both ways)."""
    import mmseg
    from common import scripts
    module = load_script(name)
    configs = os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'configs')
    settings = [n for n in scripts.VARIANT_SETTINGS if hasattr(module, n)]  # BACKBONE picks from BACKBONES...
    tables = [getattr(module, f'{n}S') for n in settings]
    for variant, listed in module.REFERENCES.items():
        choices = variant if isinstance(variant, tuple) else (variant,)
        assert len(choices) == len(tables) and all(c in t for c, t in zip(choices, tables)), variant
        for entry in [listed] if isinstance(listed, dict) else listed:  # a list: several schedules
            assert os.path.isfile(os.path.join(configs, entry['config'])), entry['config']
            if entry['mIoU'] is not None:  # None: no published number, which the docstring says
                assert f"{entry['mIoU']:.2f}" in module.__doc__, (variant, entry['mIoU'])
            chosen = {**dict(zip(settings, choices)), **entry.get('settings', {})}
            if scripts.variant_of(vars(module), chosen) != scripts.variant_of(vars(module)) or 'settings' in entry:
                assert scripts.reference_for(vars(module), chosen)['config'] == entry['config']
                assert scripts.reference_for(vars(module), chosen)['mIoU'] == entry['mIoU']

