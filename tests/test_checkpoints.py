"""Checkpoint files (common/checkpoints.py): they load with weights_only=True and mmengine's types allowed;
code in a file never runs."""
import io
import os

import numpy as np
import pytest
import torch

from common import checkpoints
from common.errors import SetupError


class _CreatesAFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def mmengine_like_checkpoint():
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('safe-load-test')
    hub.update_scalar('train/loss', np.float32(1.25))
    hub.update_scalar('train/lr', 0.01)
    hub.update_info('best_score', np.float64(41.5))
    return dict(meta=dict(message_hub=hub.state_dict(), seed=0, dataset_meta=dict(classes=('wall', 'sky')),
                          iter=np.int64(4000)),
                state_dict={'conv.weight': torch.ones(2, 2)},
                optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1).state_dict())


def test_mmengine_checkpoint_loads_safely(tmp_path):
    path = tmp_path / 'ok.pth'
    torch.save(mmengine_like_checkpoint(), path)
    ckpt = checkpoints.load(path)
    assert ckpt['meta']['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx(1.25)
    assert ckpt['meta']['iter'] == 4000
    # mmengine's own torch.load calls (resume, load_from) are safe and work too once installed.
    checkpoints.install()
    assert torch.load(path)['meta']['seed'] == 0


def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'created-by-pickle'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _CreatesAFile(str(marker))}, path)
    with pytest.raises(SetupError) as err:
        checkpoints.load(path)
    assert 'was refused' in str(err.value) and '--trust-checkpoint' in str(err.value)
    assert not marker.exists()
    checkpoints.install()
    with pytest.raises(Exception):
        torch.load(path)  # what mmengine calls: refused as well
    assert not marker.exists()


def test_trust_checkpoint_loads_the_old_way(tmp_path):
    marker = tmp_path / 'created-by-pickle'
    path = tmp_path / 'trusted.pth'
    torch.save({'payload': _CreatesAFile(str(marker))}, path)
    try:
        checkpoints.load(path, trust=True)
        assert marker.exists()
    finally:
        checkpoints.install(trust=False)


def test_damaged_file_is_a_clear_error(tmp_path):
    path = tmp_path / 'cut.pth'
    torch.save(mmengine_like_checkpoint(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SetupError, match='cannot be read'):
        checkpoints.load(path)


def test_load_from_refuses_evil_checkpoint_before_training(tmp_path, capsys, tiny_data):
    from conftest import TINY, load_script
    marker = tmp_path / 'created-by-pickle'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _CreatesAFile(str(marker))}, path)
    with pytest.raises(SystemExit) as stop:
        load_script('train_fcn').main(['--data-root', tiny_data, '--work-dir', str(tmp_path / 'w'), *TINY,
                                       '--max-iters', '1', '--load-from', str(path)])
    assert stop.value.code == 2 and 'was refused' in capsys.readouterr().err
    assert not marker.exists()


def test_a_fresh_process_loads_a_real_training_checkpoint(tmp_path):
    """No HistoryBuffer exists yet in a new process: its statistics registry is still empty."""
    import subprocess
    import sys
    from conftest import ROOT
    path = tmp_path / 'ckpt.pth'
    torch.save(mmengine_like_checkpoint(), path)
    code = ('import sys; sys.path.insert(0, "."); from common import checkpoints; '
            f'print(checkpoints.load({str(path)!r})["meta"]["message_hub"]["log_scalars"]["train/loss"].mean())')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '1.25'


def test_the_runs_config_is_formatted_once_per_content_as_mmengine_formats_it(monkeypatch):
    """mmengine formats the run's config in about eight places a run (each checkpoint's meta among them):
    the run's Config (config.for_runner) formats each content once, to mmengine's own text."""
    import copy
    import pickle
    from mmengine.config import Config
    from mmengine.config import config as mmengine_config
    from common import config
    cfg = dict(model=dict(type='EncoderDecoder', decode_head=dict(num_classes=150, channels=[1, 2])), seed=1)
    stock = Config(copy.deepcopy(cfg)).pretty_text
    calls = []
    format_code = mmengine_config.FormatCode
    monkeypatch.setattr(mmengine_config, 'FormatCode', lambda *a, **k: calls.append(1) or format_code(*a, **k))
    run_cfg = config.for_runner(copy.deepcopy(cfg))
    texts = [run_cfg.pretty_text, run_cfg.pretty_text, copy.deepcopy(run_cfg).pretty_text]
    assert texts == [stock] * 3 and len(calls) == 1
    run_cfg.model.decode_head.channels.append(3)  # another content, another text
    cfg['model']['decode_head']['channels'].append(3)
    assert run_cfg.pretty_text == Config(copy.deepcopy(cfg)).pretty_text != stock and len(calls) == 3
    assert type(pickle.loads(pickle.dumps(run_cfg))) is type(run_cfg)
