"""--export-safetensors (common/infer/export_safetensors.py) and reading its file back (common/checkpoints.py):
tensors only, a model card whose front matter parses, and the file standing in for its checkpoint in
--eval-only (the same numbers) and --load-from (the same first step); a damaged or wrong file is one
SetupError. The trainings are 2 iterations of FCN r18 on the tiny dataset."""
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY, load_script

ITERS = 2


def _write(path, tensors, metadata=None):
    from safetensors.torch import save_file
    save_file(tensors, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------- reading (no training)

def test_a_safetensors_file_reads_as_a_state_dict_and_mmengine_picks_its_loader(tmp_path):
    from mmengine.runner import CheckpointLoader
    from common import checkpoints
    checkpoints.install()
    tensors = {'backbone.conv.weight': torch.randn(4, 3, 3, 3), 'decode_head.conv_seg.bias': torch.randn(150)}
    path = _write(tmp_path / 'model.safetensors', tensors,
                  dict(format='pt', classes=json.dumps(['wall', 'building']), palette=json.dumps([[1, 2, 3], [4, 5, 6]])))
    read = checkpoints.load(path)
    assert read.keys() == {'state_dict', 'meta'} and read['meta']['dataset_meta']['classes'] == ('wall', 'building')
    assert all(torch.equal(read['state_dict'][k], v) for k, v in tensors.items()) and len(read['state_dict']) == 2
    assert checkpoints.state_dict(path, False, '--eval-only').keys() == tensors.keys()
    # mmengine's registry of checkpoint sources: by name, after URLs, before the plain local loader.
    loader = CheckpointLoader._get_checkpoint_loader
    assert loader(str(path)).__name__ == loader('work_dirs/x/MODEL.SAFETENSORS').__name__ == 'load_from_safetensors'
    assert loader('work_dirs/x/iter_2.pth').__name__ == 'load_from_local'
    assert loader('https://example.org/model.safetensors').__name__ == 'load_from_http'
    from mmengine.runner.checkpoint import _load_checkpoint
    assert torch.equal(_load_checkpoint(str(path), map_location='cpu')['state_dict']['decode_head.conv_seg.bias'],
                       tensors['decode_head.conv_seg.bias'])


def test_a_damaged_or_misnamed_safetensors_file_is_one_setup_error(tmp_path):
    from common import checkpoints
    from common.errors import SetupError
    whole = _write(tmp_path / 'whole.safetensors', {'w': torch.ones(1000)}).read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(whole[:-100])
    (tmp_path / 'text.safetensors').write_text('not tensors')
    for name in ('cut', 'text'):
        with pytest.raises(SetupError) as err:
            checkpoints.load(tmp_path / f'{name}.safetensors', what='--load-from checkpoint')
        assert 'cannot be read as safetensors' in err.value.what and '--export-safetensors' in err.value.fix
    (tmp_path / 'renamed.pth').write_bytes(whole)
    with pytest.raises(SetupError) as err:
        checkpoints.load(tmp_path / 'renamed.pth')
    assert 'without the .safetensors suffix' in err.value.what


def test_resume_takes_only_a_pth_of_work_dir(tmp_path):
    """A safetensors file has no iteration or optimizer: even named by last_checkpoint, it is not resumed."""
    from common import checkpoints
    exported = _write(tmp_path / 'model.safetensors', {'w': torch.ones(3)})
    (tmp_path / 'last_checkpoint').write_text(str(exported))
    assert checkpoints.latest(tmp_path) is None
    torch.save(dict(meta=dict(iter=4), state_dict={'w': torch.ones(3)}), tmp_path / 'iter_4.pth')
    assert checkpoints.latest(tmp_path) == str(tmp_path / 'iter_4.pth')


def test_the_mIoU_of_the_checkpoints_own_iteration_and_where_it_was_recorded(tmp_path):
    from common.infer.export_safetensors import recorded_miou
    hub = dict(runtime_info=dict(best_score=41.5, best_ckpt=str(tmp_path / 'best_mIoU_iter_8.pth')))
    assert recorded_miou(dict(meta=dict(iter=8), message_hub=hub), tmp_path / 'iter_8.pth') == (
        41.5, "the checkpoint's message hub (best_score: the evaluation of iteration 8, best_mIoU_iter_8.pth)")
    # iter_12 came after the best one: its own score is the run's last evaluation, in summary.json.
    (tmp_path / 'summary.json').write_text(json.dumps(dict(status='finished', iters_done=12, mIoU=40.25)))
    miou, source = recorded_miou(dict(meta=dict(iter=12), message_hub=hub), tmp_path / 'iter_12.pth')
    assert miou == 40.25 and source.startswith(str(tmp_path / 'summary.json'))
    miou, source = recorded_miou(dict(meta=dict(iter=10), message_hub=hub), tmp_path / 'iter_10.pth')
    assert miou is None and 'no evaluation of iteration 10' in source and '--eval-only' in source
    assert recorded_miou({'state_dict': {}}, 'model.safetensors')[0] is None


def test_the_flags_that_build_the_model_are_the_command_less_its_modes():
    from common import cli
    argv = ['--backbone', 'r18-d8', '--export-safetensors', 'a.pth', '--out=x', '--crop-size', '64',
            '--predict', 'a.pth', 'in/', '--tta', '--trust-checkpoint', '--work-dir', 'w']
    assert cli.model_flags(argv) == ['--backbone', 'r18-d8', '--crop-size', '64', '--work-dir', 'w']
    assert cli.model_flags(argv, without=['--work-dir']) == ['--backbone', 'r18-d8', '--crop-size', '64']


def test_out_is_a_folder_and_goes_with_an_export(tmp_path):
    import types
    from common import validate
    (tmp_path / 'file').write_text('')
    options = dict(export_safetensors='a.pth', out='b.safetensors')
    assert any('writes a folder' in p for p in validate._options(options))
    assert not validate._options(dict(export_safetensors='a.pth', out='exported'))
    assert '--export-safetensors' in validate._options(dict(out='exported'))[0]
    s = types.SimpleNamespace(dump_config=None, eval_only=None, predict=None, export_onnx=None, flops=False,
                              export_safetensors=str(tmp_path / 'file' / 'x.pth'), out=None, WORK_DIR='work_dirs/x')
    # The default folder is beside the checkpoint: there it must be possible to make it.
    assert [p.split(':')[0] for p in validate.paths(s)] == [f'--export-safetensors {tmp_path / "file"}']


# ---------------------------------------------------------------- a trained checkpoint, exported

@pytest.fixture(scope='module')
def exported(tiny_data, tmp_path_factory):
    """(module, flags, work dir, checkpoint, export folder): FCN r18 trained ITERS iterations, evaluated at
    the end, and iter_ITERS.pth exported to its default folder."""
    module = load_script('train_fcn')
    work = tmp_path_factory.mktemp('fcn_r18')
    flags = ['--data-root', tiny_data, '--work-dir', str(work), *TINY, '--backbone', 'r18-d8']
    module.main(flags + ['--max-iters', str(ITERS), '--val-interval', str(ITERS)])
    checkpoint = work / f'iter_{ITERS}.pth'
    module.main(flags + ['--export-safetensors', str(checkpoint)])
    yield module, flags, work, checkpoint, work / f'iter_{ITERS}_safetensors'
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_export_is_the_models_tensors_and_nothing_else(exported, tmp_path):
    from mmseg.apis import init_model
    from safetensors import safe_open
    from common import checkpoints
    module, flags, work, checkpoint, out = exported
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.py', 'model.safetensors']
    data = (out / 'model.safetensors').read_bytes()
    # The whole file is one JSON header and the tensors' bytes it lists, end to end: nothing pickled.
    size = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + size])
    spans = sorted(entry['data_offsets'] for key, entry in header.items() if key != '__metadata__')
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and 8 + size + spans[-1][1] == len(data)
    # config.py is what --dump-config writes, and builds the model whose state_dict the file holds.
    module.main(flags + ['--dump-config', str(tmp_path / 'dumped.py')])
    assert (out / 'config.py').read_text() == (tmp_path / 'dumped.py').read_text()
    model = init_model(str(out / 'config.py'), device='cpu')
    original = checkpoints.load(checkpoint)['state_dict']
    with safe_open(str(out / 'model.safetensors'), framework='pt') as f:
        assert list(f.keys()) == sorted(model.state_dict()) and set(f.keys()) == set(original)
        assert all(torch.equal(f.get_tensor(k), original[k]) for k in f.keys())
        metadata = f.metadata()
    assert metadata['format'] == 'pt' and metadata['iteration'] == str(ITERS) and metadata['variant'] == 'r18-d8'
    # mmseg's own API reads it (config.py imports common.stock_tools, which registers the reader).
    loaded = init_model(str(out / 'config.py'), str(out / 'model.safetensors'), device='cpu')
    assert all(torch.equal(loaded.state_dict()[k], original[k]) for k in original)
    assert loaded.dataset_meta['classes'][0] == 'wall'


@pytest.mark.slow
def test_the_model_card_states_mIoU_iterations_variant_and_how_to_load_it(exported):
    _, _, work, checkpoint, out = exported
    card = (out / 'README.md').read_text()
    assert card.startswith('---\n')
    front = yaml.safe_load(card.split('---\n')[1])
    summary = json.loads((work / 'summary.json').read_text())
    assert front['library_name'] == 'mmsegmentation' and front['datasets'] == ['ade20k']
    assert 'fcn' in front['tags'] and front['metrics'] == ['mean_iou']
    assert front['variant'] == 'r18-d8' and front['script'] == 'train_fcn.py'
    assert front['iterations'] == ITERS and front['max_iters'] == ITERS
    assert front['mIoU'] == summary['mIoU'] and "message hub" in front['mIoU_source']
    assert front['model-index'][0]['results'][0]['metrics'][0]['value'] == summary['mIoU']
    assert set(front['versions']) == {'torch', 'mmcv', 'mmseg', 'mmengine', 'safetensors'}
    assert f'--export-safetensors {checkpoint}' in card  # the command that made it
    for line in (f'--eval-only {out}/model.safetensors', f'--load-from {out}/model.safetensors',
                 f"init_model('{out}/config.py', '{out}/model.safetensors'"):
        assert line in card


@pytest.mark.slow
def test_eval_only_of_the_export_equals_the_checkpoints(exported, tmp_path):
    module, flags, _, checkpoint, out = exported
    results = {}
    for name, path in (('pth', checkpoint), ('safetensors', out / 'model.safetensors')):
        module.main(flags + ['--eval-only', str(path), '--out', str(tmp_path / name)])
        results[name] = ((tmp_path / name / 'per_class.csv').read_text(),
                         {k: v for k, v in json.loads((tmp_path / name / 'metrics.json').read_text()).items()
                          if k in ('mIoU', 'mAcc', 'aAcc', 'images')})
    assert results['pth'] == results['safetensors']


def _first_loss(work):
    return json.loads(next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()[0])['loss']


@pytest.mark.slow
def test_load_from_the_export_starts_training_where_the_checkpoint_does(exported, tmp_path):
    module, flags, _, checkpoint, out = exported
    one = ['--max-iters', '1', '--val-interval', '1']
    losses = {}
    for name, path in (('pth', checkpoint), ('safetensors', out / 'model.safetensors')):
        module.main(flags + one + ['--work-dir', str(tmp_path / name), '--load-from', str(path)])
        losses[name] = _first_loss(tmp_path / name)
    log = next((tmp_path / 'safetensors').glob('*/*.log')).read_text()  # mmengine's lines: the run's log file
    assert f"Load checkpoint from {out / 'model.safetensors'}" in log
    assert losses['pth'] == losses['safetensors']


@pytest.mark.slow
def test_a_damaged_or_wrong_model_file_stops_with_exit_code_2(exported, tmp_path, capsys):
    module, flags, _, _, out = exported
    data = (out / 'model.safetensors').read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    for mode in ('--eval-only', '--load-from', '--export-safetensors'):
        with pytest.raises(SystemExit) as exit_:
            module.main(flags + ['--work-dir', str(tmp_path / 'w'), mode, str(tmp_path / 'cut.safetensors')])
        assert exit_.value.code == 2
        assert 'cannot be read as safetensors' in capsys.readouterr().err
    from safetensors.torch import load_file
    state = load_file(str(out / 'model.safetensors'))
    state.pop('decode_head.conv_seg.weight')
    state['decode_head.conv_seg.bias'] = torch.zeros(19)  # Cityscapes' classes
    _write(tmp_path / 'other.safetensors', state)
    with pytest.raises(SystemExit) as exit_:
        module.main(flags + ['--eval-only', str(tmp_path / 'other.safetensors')])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and 'does not fit this model' in err
    assert 'missing: decode_head.conv_seg.weight' in err and 'decode_head.conv_seg.bias (19,)' in err
