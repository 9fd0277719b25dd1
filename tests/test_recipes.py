"""Each script's config equals its official MMSegmentation 1.2.2 recipe (the configs shipped in the
installed mmsegmentation wheel) in what matters: the model (config and built network: parameter
count, layer names and shapes), optimizer, paramwise settings, scheduler, iterations, pipelines,
crop, classes, label reduction and test mode. What differs on purpose is listed in each script's
docstring; this test knows the user's defaults (batch 2 per GPU, evaluation every 4000,
checkpoint policy, workers) and each script's own DEVIATIONS and skips exactly those.

A variant's recipe listed in REFERENCES with `deviations` (common/scripts.py) is compared the same way,
built with the variant and the entry's `flags` (its batch layout), skipping those deviations; its
batch per GPU and gradient accumulation must then be the recipe's too.

DEVIATIONS names (a script lists only what its docstring explains): 'model' (the model config;
the built network is still compared unless 'built_model' is listed too), 'built_model',
'optimizer', 'paramwise_cfg', 'clip_grad', 'constructor', 'wrapper_type', 'param_scheduler',
'max_iters', 'pipelines', 'dataset', 'evaluator', 'test_cfg', 'custom_imports'."""
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


def strip(model):
    """The model dict without where its weights come from (URL in the recipe, pretrain/ here)."""
    from common import config
    return plain(config.without_pretrained(model))


def build(model_cfg):
    """Build as mmengine does (common.infer.model.build: a ConfigDict, tuples kept, SyncBN as BN, no
    weight file read)."""
    from common.infer.model import build
    return build(model_cfg, on='cpu')


def _inner(dataset):
    """The dataset inside a RepeatDataset wrapper (PoolFormer's recipe), or the dataset itself."""
    return dataset.get('dataset', dataset) if dataset.get('type') == 'RepeatDataset' else dataset


def pipelines(cfg):
    return plain([_inner(cfg['train_dataloader']['dataset'])['pipeline'],
                  _inner(cfg['val_dataloader']['dataset'])['pipeline']])


@pytest.fixture(scope='module', params=SCRIPTS)
def pair(request):
    module = load_script(request.param)
    ref = official(module.REFERENCE['config'])
    mine = ours(module)
    deviations = set(getattr(module, 'DEVIATIONS', ()))
    return module, ref, mine, deviations


def test_model_config_matches(pair):
    module, ref, mine, deviations = pair
    if 'model' in deviations:
        pytest.skip('documented model deviation')
    assert strip(mine['model']) == strip(ref['model'])


def test_built_model_matches(pair):
    module, ref, mine, deviations = pair
    if 'built_model' in deviations:
        pytest.skip('documented model deviation')
    a, b = build(mine['model']), build(ref['model'])
    shapes_a = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    assert shapes_a == shapes_b
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_optimizer_and_schedule_match(pair):
    module, ref, mine, deviations = pair
    for key in ('optimizer', 'clip_grad', 'paramwise_cfg', 'constructor'):
        if key not in deviations:
            assert plain(mine['optim_wrapper'].get(key)) == plain(ref['optim_wrapper'].get(key)), key
    if 'wrapper_type' not in deviations:
        assert mine['optim_wrapper']['type'] == ref['optim_wrapper']['type']
    if 'param_scheduler' not in deviations:
        assert plain(mine['param_scheduler']) == plain(ref['param_scheduler'])
    if 'max_iters' not in deviations:
        assert mine['train_cfg']['max_iters'] == ref['train_cfg']['max_iters']
    assert mine['train_cfg']['type'] == ref['train_cfg']['type']


def test_data_matches(pair):
    module, ref, mine, deviations = pair
    if 'pipelines' not in deviations:
        assert pipelines(mine) == pipelines(ref)
    for split in ('train_dataloader', 'val_dataloader'):
        assert mine[split]['dataset'].get('reduce_zero_label', True) is True
        assert mine[split]['dataset']['type'] == 'ADE20KDataset'
        if 'dataset' in deviations:
            continue
        for key in ('type', 'data_root', 'data_prefix'):
            assert plain(mine[split]['dataset'][key]) == plain(ref[split]['dataset'][key])
        assert plain(mine[split]['sampler']) == plain(ref[split]['sampler'])
    if 'evaluator' not in deviations:
        assert plain(mine['val_evaluator']) == plain(ref['val_evaluator'])
    assert mine['model']['data_preprocessor']['size'] == tuple(module.CROP_SIZE)


def test_user_defaults_are_the_only_runtime_changes(pair):
    module, ref, mine, deviations = pair
    assert mine['train_dataloader']['batch_size'] == 2
    assert mine['train_cfg']['val_interval'] == 4000
    hook = mine['default_hooks']['checkpoint']
    assert hook['interval'] == 4000 and hook['max_keep_ckpts'] == 3 and hook['save_best'] == 'mIoU'
    if 'test_cfg' not in deviations:
        assert plain(mine['model']['test_cfg']) == plain(ref['model']['test_cfg'])
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
            assert f"{entry['mIoU']:.2f}" in module.__doc__, (variant, entry['mIoU'])
            chosen = {**dict(zip(settings, choices)), **entry.get('settings', {})}
            if scripts.variant_of(vars(module), chosen) != scripts.variant_of(vars(module)) or 'settings' in entry:
                assert scripts.reference_for(vars(module), chosen)['config'] == entry['config']
                assert scripts.reference_for(vars(module), chosen)['mIoU'] == entry['mIoU']


def compared_variants():
    """(script, variant, config) of every REFERENCES entry that asks to be compared in full."""
    found = []
    for name in SCRIPTS:
        for variant, listed in (getattr(load_script(name), 'REFERENCES', None) or {}).items():
            for entry in [listed] if isinstance(listed, dict) else listed:
                if 'deviations' in entry:
                    found.append((name, variant, entry['config']))
    return found


@pytest.fixture(scope='module', params=compared_variants(), ids=lambda p: f'{p[0]}-{p[1]}')
def variant_pair(request):
    from common import cli, scripts
    name, variant, config = request.param
    module = load_script(name)
    entry = next(e for e in scripts.reference_entries(vars(module), variant) if e.get('config') == config)
    settings = [n for n in scripts.VARIANT_SETTINGS if hasattr(module, n)]
    argv = [arg for setting, choice in zip(settings, variant if isinstance(variant, tuple) else (variant,))
            for arg in (cli.flag_name(setting), choice)]
    mine = module.build_config(cli.parse(vars(module), argv + list(entry.get('flags', []))))
    return module, official(config), mine, set(entry['deviations'])


@pytest.mark.parametrize('check', [test_model_config_matches, test_built_model_matches,
                                   test_optimizer_and_schedule_match, test_data_matches],
                         ids=lambda f: f.__name__.removeprefix('test_'))
def test_variant_recipe_matches(variant_pair, check):
    check(variant_pair)
    _, ref, mine, _ = variant_pair
    assert mine['train_dataloader']['batch_size'] == ref['train_dataloader']['batch_size']
    assert mine['optim_wrapper'].get('accumulative_counts', 1) == ref['optim_wrapper'].get('accumulative_counts', 1)
    assert plain(mine['model']['test_cfg']) == plain(ref['model']['test_cfg'])
