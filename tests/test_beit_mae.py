"""train_beit.py and train_mae.py beyond what every script gets: their pretrained files (made here in
the published key layouts, random values) load through a training run at another window, MAE's by
design lacks exactly its layer scales and relative-position tables, the multi-scale test enlarges
views smaller than the fixed window, BEiT-L's LR decays over its whole run, and what the fixed window
cannot take is refused before anything is built."""
import json

import pytest
import torch

from common import convert_beit
from conftest import TINY, load_script
from test_convert_beit import beit_state_dict, mae_state_dict

RUN = [f for f in TINY if f != '--no-pretrained'] + ['--max-iters', '1', '--val-interval', '1']
WINDOW = 64 // 16  # the tiny crop's window, in patches


def converted_file(tmp_path, sd, name):
    src = tmp_path / name
    torch.save({'model': sd}, src)
    return convert_beit.main([str(src)])


@pytest.fixture(scope='module')
def beit_run(tiny_data, tmp_path_factory):
    """train_beit.py (BEiT-B) for one step from a pretrained file of the 224 pretraining's 14x14 window."""
    tmp = tmp_path_factory.mktemp('beit')
    sd = beit_state_dict(dims=768, depth=12, heads=12, window=14, classes=10, dtype=torch.float16)
    weights = converted_file(tmp, sd, 'beit_base_patch16_224_pt22k_ft22k.pth')
    work = tmp / 'work'
    flags = ['--data-root', tiny_data, '--work-dir', str(work), *RUN]
    load_script('train_beit').main(flags + ['--pretrained', str(weights)])
    yield sd, work, flags
    for path in work.glob('*.pth'):
        path.unlink()


@pytest.mark.slow
def test_beit_pretrained_tables_of_another_window_load_in_a_training_run(beit_run):
    from common import fixed_window
    sd, work, _ = beit_run
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['iters_done'] == 1
    assert not fixed_window.installed(), "the run's interp2d-free resize is mmseg's own method again after it"
    state = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=False)['state_dict']
    table = state['backbone.layers.3.attn.relative_position_bias_table']
    source = sd['blocks.3.attn.relative_position_bias_table'].float()
    assert table.shape == ((2 * WINDOW - 1) ** 2 + 3, 12) and source.shape == (27 ** 2 + 3, 12)
    # One step at the first warmup LR (1e-6 x 3e-5 x layer decay) leaves the loaded values in place.
    torch.testing.assert_close(table[-3:], source[-3:], atol=1e-4, rtol=0)             # class-token rows
    torch.testing.assert_close(table[(2 * WINDOW - 1) ** 2 // 2], source[27 ** 2 // 2], atol=1e-4, rtol=0)
    torch.testing.assert_close(state['backbone.layers.0.attn.q_bias'], sd['blocks.0.attn.q_bias'].float(),
                               atol=1e-4, rtol=0)


@pytest.mark.slow
def test_beit_multiscale_test_enlarges_views_smaller_than_the_window(beit_run, tmp_path, monkeypatch):
    _, work, flags = beit_run
    module = load_script('train_beit')
    out = tmp_path / 'tta'
    module.main(flags + ['--eval-only', str(work / 'iter_1.pth'), '--tta', '--out', str(out)])
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['tta'] and 'slide + multi-scale/flip TTA' == metrics['mode'] and metrics['images'] == 3
    assert 0 <= metrics['mIoU'] <= 100 and metrics['reference_mIoU'] == 53.84
    # Without the minimum size, the 0.5 and 0.75 views (40x32, 60x48) are smaller than the 64 window.
    build = module.build_config
    monkeypatch.setattr(module, 'build_config', lambda s: {k: v for k, v in build(s).items() if k != 'tta_pipeline'})
    with pytest.raises(RuntimeError):
        module.main(flags + ['--eval-only', str(work / 'iter_1.pth'), '--tta', '--out', str(tmp_path / 'bare')])


@pytest.mark.slow
def test_mae_pretrained_file_lacks_exactly_layer_scale_and_tables(tiny_data, tmp_path, capsys):
    """MAE's encoder (14x14 grid, no gamma, no tables) trains; one lacking any other tensor stops."""
    sd = mae_state_dict(dims=768, depth=12, window=14, seed=1, dtype=torch.float16)
    module = load_script('train_mae')
    flags = ['--data-root', tiny_data, *RUN]
    bad = converted_file(tmp_path, {k: v for k, v in sd.items() if k != 'blocks.5.attn.qkv.bias'},
                         'mae_without_qkv_bias.pth')
    with pytest.raises(SystemExit) as stop:
        module.main(flags + ['--work-dir', str(tmp_path / 'bad'), '--pretrained', str(bad)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'does not fit MAE' in err and 'layers.5.attn.qkv.bias' in err
    assert 'gamma' not in err and 'relative_position_bias_table' not in err

    good = converted_file(tmp_path, sd, 'mae_pretrain_vit_base.pth')
    work = tmp_path / 'work'
    module.main(flags + ['--work-dir', str(work), '--pretrained', str(good)])
    assert json.loads((work / 'summary.json').read_text())['status'] == 'finished'
    state = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert state['backbone.pos_embed'].shape == (1, WINDOW ** 2 + 1, 768)               # 14x14 resized to 4x4
    assert state['backbone.layers.11.gamma_2'].shape == (768,)
    for path in work.glob('*.pth'):
        path.unlink()


def test_a_missing_mae_or_beit_file_names_the_fetch_and_convert_commands(tiny_data, tmp_path, capsys):
    from common import pretrained
    from common.errors import SetupError
    for script, source in (('train_mae', 'mae_pretrain_vit_base.pth'),
                           ('train_beit', 'beit_base_patch16_224_pt22k_ft22k.pth')):
        with pytest.raises(SystemExit) as stop:
            load_script(script).main(['--data-root', tiny_data, '--work-dir', str(tmp_path / script),
                                      '--crop-size', '64', '--max-iters', '1',
                                      '--pretrained', str(tmp_path / source.replace('.pth', '_mmseg.pth'))])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and 'pretrained file not found' in err
        assert f'python -m common.pretrained fetch {source}' in err and f'python -m common.convert_beit' in err
    with pytest.raises(SetupError) as err:
        pretrained.require('pretrain/beit_large_patch16_224_pt22k_ft22k_mmseg.pth')
    assert 'python -m common.convert_beit pretrain/beit_large_patch16_224_pt22k_ft22k.pth' in err.value.fix


def test_beit_large_lr_decays_over_its_whole_run():
    """The BEiT-L recipe's PolyLR ends at iteration 160000 of 320000 (LR 0 for the second half);
    here it ends with the loop, in its exact batch layout and at the default batch alike."""
    from common import cli
    from test_recipes import official, plain
    module = load_script('train_beit')
    ref = official(module.REFERENCES['beit-l']['config'])
    assert ref['param_scheduler'][-1]['end'] == 160_000 < ref['train_cfg']['max_iters'] == 320_000
    flags = [part for k, v in module.REFERENCES['beit-l']['flags'].items() for part in (cli.flag_name(k), str(v))]
    exact = module.build_config(cli.parse(vars(module), ['--backbone', 'beit-l', *flags]))
    fixed = plain(ref['param_scheduler'])
    fixed[-1]['end'] = ref['train_cfg']['max_iters']
    assert plain(exact['param_scheduler']) == fixed and exact['train_cfg']['max_iters'] == 320_000
    default = module.build_config(cli.parse(vars(module), ['--backbone', 'beit-l']))
    assert default['param_scheduler'][-1]['end'] == default['train_cfg']['max_iters'] == 160_000
    assert default['param_scheduler'][0]['end'] == 1500 and default['optim_wrapper']['type'] == 'AmpOptimWrapper'
    assert default['optim_wrapper']['optimizer']['lr'] == 2e-5
    assert module.build_config(cli.parse(vars(module), []))['optim_wrapper']['optimizer']['lr'] == 3e-5


@pytest.mark.parametrize('name', ['train_beit', 'train_mae'])
def test_what_the_fixed_window_cannot_take_is_refused(name, tiny_data, tmp_path, capsys):
    module = load_script(name)
    for flags, expected in ((['--crop-size', '64,96', '--max-iters', '1'], 'square'),
                            (['--flops', '--flops-size', '64,64'], 'pass --flops-size')):
        with pytest.raises(SystemExit) as stop:
            module.main(['--data-root', tiny_data, '--work-dir', str(tmp_path / 'w'), *flags])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and expected in err and 'Traceback' not in err, err
    assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_beit_flops_at_its_window(tiny_data, capsys):
    load_script('train_beit').main(['--data-root', tiny_data, *TINY, '--flops', '--flops-size', '64,64'])
    assert 'complexity at 1x3x64x64' in capsys.readouterr().out
