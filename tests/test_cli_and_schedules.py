"""Settings become flags, flags land before derived numbers, and the launcher follows the environment."""
import pytest

from common import cli, dist, schedules, scripts, train
from common.errors import SetupError
from conftest import load_script


def parse(argv):
    module = load_script('train_segformer')
    return module, cli.parse(vars(module), argv)


def test_every_setting_is_a_flag_with_its_comment_as_help(capsys):
    module = load_script('train_fcn')
    with pytest.raises(SystemExit):
        cli.parse(vars(module), ['--help'])
    out = capsys.readouterr().out
    for flag in ('--data-root', '--work-dir', '--crop-size', '--batch-per-gpu', '--max-iters', '--val-interval',
                 '--lr', '--precision', '--channels-last', '--tf32', '--no-tf32', '--compile', '--seed', '--backbone', '--pretrained', '--accumulate',
                 '--dump-config', '--load-from', '--no-pretrained', '--demo'):
        assert flag in out
    assert 'optimizer steps; the PolyLR end follows' in out


def test_flags_move_every_derived_number():
    module, s = parse(['--max-iters', '3000', '--val-interval', '500', '--crop-size', '256', '--accumulate', '2'])
    cfg = module.build_config(s)
    assert cfg['train_cfg'] == dict(type='IterBasedTrainLoop', max_iters=6000, val_interval=1000)
    warmup, poly = cfg['param_scheduler']
    assert warmup['end'] == 3000 and poly['begin'] == 3000 and poly['end'] == 6000
    assert cfg['optim_wrapper']['accumulative_counts'] == 2
    assert cfg['default_hooks']['checkpoint']['interval'] == 1000
    assert cfg['model']['data_preprocessor']['size'] == (256, 256)
    resize, crop = cfg['train_dataloader']['dataset']['pipeline'][2:4]
    assert resize['scale'] == (1024, 256) and crop['crop_size'] == (256, 256)


def test_a_run_shorter_than_the_warmup_still_has_a_valid_schedule():
    sched = schedules.adamw_poly(lr=1e-4, max_iters=2, val_interval=2)
    assert sched['param_scheduler'][0]['end'] == 1 and sched['param_scheduler'][1]['begin'] == 1


def test_no_pretrained_and_backbone_choice():
    module, s = parse(['--no-pretrained', '--backbone', 'mit-b2'])
    cfg = module.build_config(s)
    assert cfg['model']['backbone']['init_cfg'] is None
    assert cfg['model']['backbone']['num_layers'] == [3, 4, 6, 3]
    # A bad choice stops at the flags now (common/validate.py), before build_config runs...
    with pytest.raises(SystemExit) as stop:
        parse(['--backbone', 'mit-b9'])
    assert stop.value.code == 2
    # ...and cli.choose still refuses one that reaches it another way (an edited table, a caller).
    with pytest.raises(SetupError, match="'mit-b9' is not one of"):
        cli.choose('BACKBONE', 'mit-b9', vars(module)['BACKBONES'])


def test_pretrained_follows_the_backbone():
    module = load_script('train_pspnet')
    cfg = module.build_config(cli.parse(vars(module), ['--backbone', 'r101-d8']))
    assert cfg['model']['pretrained'] == 'pretrain/resnet101_v1c-e67eebb6.pth'
    assert cfg['model']['backbone']['depth'] == 101


def test_demo_settings_and_explicit_flags_win():
    module, s = parse(['--demo', '--max-iters', '7'])
    assert s.DATA_ROOT == cli.DEMO_DATA_ROOT and s.PRETRAINED is None and s.MAX_ITERS == 7
    assert s.WORK_DIR == 'work_dirs/demo_segformer'


def test_a_scripts_own_demo_settings_go_over_the_common_ones():
    """`make demo` (train_fcn.py --demo) trains FCN's ResNet-18 variant on a short schedule; a script
    without DEMO_SETTINGS keeps its default model, and explicit flags still win."""
    fcn = load_script('train_fcn')
    s = cli.parse(vars(fcn), ['--demo'])
    assert (s.BACKBONE, s.MAX_ITERS, s.VAL_INTERVAL, s.LR) == ('r18-d8', 100, 100, 0.03)
    assert s.CROP_SIZE == (64, 64) and s.BATCH_PER_GPU == 8 and s.PRETRAINED is None
    assert fcn.build_config(s)['model']['backbone']['depth'] == 18
    s = cli.parse(vars(fcn), ['--demo', '--backbone', 'r50-d8', '--max-iters', '200', '--lr', '0.01'])
    assert (s.BACKBONE, s.MAX_ITERS, s.VAL_INTERVAL, s.LR) == ('r50-d8', 200, 100, 0.01)
    pspnet = load_script('train_pspnet')
    s = cli.parse(vars(pspnet), ['--demo'])
    assert (s.BACKBONE, s.MAX_ITERS, s.LR) == (pspnet.BACKBONE, cli.DEMO_SETTINGS['MAX_ITERS'], pspnet.LR)
    # The console says what the demo trains.
    head = train.banner(cli.parse(vars(fcn), ['--demo']), 1).splitlines()[0]
    assert head.startswith('[fcn] demo: train_fcn.py BACKBONE=r18-d8 from scratch') and '100 iterations' in head
    assert 'demo' not in train.banner(cli.parse(vars(fcn), []), 1).splitlines()[0]


def test_every_scripts_demo_settings_are_its_settings():
    for name in scripts.all_names():
        namespace = vars(scripts.load(name))
        own = namespace.get('DEMO_SETTINGS', {})
        assert set(own) <= set(scripts.settings_of(namespace)) | set(cli.COMMON_SETTINGS), name
        cli.parse(namespace, ['--demo'])  # every value in its range, or exit 2 (common/validate.py)


@pytest.mark.parametrize('env, launcher, world', [
    ({}, 'none', 1),
    ({'RANK': '0', 'WORLD_SIZE': '4', 'LOCAL_RANK': '0'}, 'pytorch', 4),
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '8'}, 'slurm', 8),
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '1'}, 'none', 1),
])
def test_launcher_from_environment(env, launcher, world):
    assert dist.launcher_from_env(env) == launcher
    assert dist.world_size_from_env(env) == world


def test_banner_offers_accumulation_to_keep_the_reference_batch():
    module, s = parse([])
    text = train.banner(s, world=1)
    assert 'total batch 2 = 2/GPU x 1 GPU(s) x accumulate 1' in text and '--accumulate 8' in text


def test_a_variant_shows_only_the_reference_numbers_that_are_its_own():
    module, default = parse([])
    assert default.reference == module.REFERENCE
    vit = load_script('train_vit_deit')  # its MultiLevelNeck DeiTs have 160k recipes only
    mln = cli.parse(vars(vit), ['--backbone', 'deit-s-mln'])
    assert mln.reference == {'total_batch': 16}  # not DeiT-S's 42.96 mIoU, memory and fps
    text = train.banner(mln, world=1)
    assert 'no reference numbers listed for BACKBONE=deit-s-mln' in text and '42.96' not in text
    assert '--accumulate 8' in text


def test_a_listed_variant_shows_its_own_recipe_numbers():
    _, b5 = parse(['--backbone', 'mit-b5'])
    assert b5.reference['config'] == 'segformer/segformer_mit-b5_8xb2-160k_ade20k-512x512.py'
    assert (b5.reference['mIoU'], b5.reference['total_batch']) == (49.13, 16)
    assert 'reference mIoU 49.13)' in train.banner(b5, world=1)

    fastfcn = load_script('train_fastfcn')  # a HEAD picks the recipe
    aspp = cli.parse(vars(fastfcn), ['--head', 'aspp'])
    assert aspp.reference['mIoU'] == 41.88 and 'jpu_aspp' in aspp.reference['config']


def test_a_two_setting_variant_and_its_own_total_batch():
    twins = load_script('train_twins')
    assert scripts.variant_of(vars(twins)) == ('pcpvt-s', 'uperhead')
    svt_l = cli.parse(vars(twins), ['--backbone', 'svt-l'])
    assert (svt_l.reference['mIoU'], svt_l.reference['total_batch']) == (49.65, 16)  # 8 x 2, not the default's 32
    fpn = cli.parse(vars(twins), ['--head', 'fpn'])
    assert (fpn.reference['mIoU'], fpn.reference['total_batch']) == (43.26, 32)
    # Every Twins recipe is listed now: take one out to see a variant with no published numbers.
    without = {**vars(twins), 'REFERENCES': {k: v for k, v in twins.REFERENCES.items() if k != ('pcpvt-b', 'uperhead')}}
    unlisted = cli.parse(without, ['--backbone', 'pcpvt-b'])
    assert unlisted.reference == {'total_batch': 32}
    text = train.banner(unlisted, world=1)
    assert 'no reference numbers listed for BACKBONE=pcpvt-b, HEAD=uperhead' in text


def test_a_reference_trained_at_another_crop_says_so():
    module = load_script('train_mask2former')
    at_512 = cli.parse(vars(module), ['--backbone', 'swin-l'])
    assert 'mIoU 56.01 at crop 640x640; this run crops 512x512)' in train.banner(at_512, world=1)
    at_640 = cli.parse(vars(module), ['--backbone', 'swin-l', '--crop-size', '640'])
    assert 'reference mIoU 56.01)' in train.banner(at_640, world=1)


@pytest.mark.parametrize('name', ['train_maskformer', 'train_knet'])
def test_an_optional_number_setting_takes_numbers_only(name, capsys):
    """`LR: float | None = None`: None keeps the variant's recipe LR, a number replaces it, a typo is
    a one-line usage error (exit 2), not a traceback from deep inside build_config."""
    module = load_script(name)
    assert cli.parse(vars(module), []).LR is None
    s = cli.parse(vars(module), ['--lr', '3e-5'])
    assert s.LR == 3e-5
    assert module.build_config(s)['optim_wrapper']['optimizer']['lr'] == 3e-5
    with pytest.raises(SystemExit) as stop:
        cli.parse(vars(module), ['--lr', 'abc'])
    assert stop.value.code == 2
    assert "argument --lr: invalid float value: 'abc'" in capsys.readouterr().err


def test_a_variant_at_another_schedule_gets_that_recipes_numbers():
    """REFERENCES entries may list several recipes of one variant, told apart by their `settings`: a
    run gets the entry whose settings it has, else the variant's default-schedule recipe."""
    namespace = dict(BACKBONE='r50', MAX_ITERS=80_000, BATCH_PER_GPU=2, BACKBONES={'r50': 0, 'r101': 0},
                     REFERENCE=dict(config='x/r50-80k.py', mIoU=1.0, total_batch=16),
                     REFERENCES={'r50': [dict(config='x/r50-160k.py', mIoU=2.0, settings=dict(MAX_ITERS=160_000))],
                                 'r101': [dict(config='x/r101-80k.py', mIoU=3.0),
                                          dict(config='x/r101-160k.py', mIoU=4.0, settings=dict(MAX_ITERS=160_000)),
                                          dict(config='x/r101-8x1.py', mIoU=5.0, total_batch=8,
                                               settings=dict(BATCH_PER_GPU=1))]})
    chosen = {(): 'x/r50-80k.py', (('MAX_ITERS', 160_000),): 'x/r50-160k.py',
              (('MAX_ITERS', 300),): 'x/r50-80k.py', (('BACKBONE', 'r101'),): 'x/r101-80k.py',
              (('BACKBONE', 'r101'), ('MAX_ITERS', 160_000)): 'x/r101-160k.py',
              (('BACKBONE', 'r101'), ('BATCH_PER_GPU', 1)): 'x/r101-8x1.py'}
    for settings, config in chosen.items():
        assert scripts.reference_for(namespace, dict(settings))['config'] == config, settings
    assert scripts.reference_for(namespace, dict(BACKBONE='r101', BATCH_PER_GPU=1))['total_batch'] == 8
    assert scripts.reference_for(namespace, dict(BACKBONE='r101'))['total_batch'] == 16  # inherited
