"""A run changes mmengine, mmseg, mmcv and torch only through their registries (optimizer wrappers,
loops, samplers, hooks, a file backend) and by forward hooks on its own model; what has no registry
is undone when the run ends. Whatever runs next in the same process meets the stock libraries."""
import json
import os
import signal
import warnings

import pytest
import torch

from conftest import TINY, load_script

pytestmark = pytest.mark.slow  # every test here trains


def library_attributes():
    """{name: (the object, the module that must define it)} of what a run could have replaced."""
    from mmcv.ops import MultiScaleDeformableAttention
    from mmengine.fileio.backends import LocalBackend
    from mmengine.model import BaseModel
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    from mmseg.models.backbones.beit import BEiT
    from mmseg.models.decode_heads import decode_head, point_head
    return {
        'OptimWrapper.update_params': (OptimWrapper.update_params, 'mmengine.optim.optimizer.optimizer_wrapper'),
        'OptimWrapper._clip_grad': (OptimWrapper._clip_grad, 'mmengine.optim.optimizer.optimizer_wrapper'),
        'AmpOptimWrapper.step': (AmpOptimWrapper.step, 'mmengine.optim.optimizer.amp_optimizer_wrapper'),
        'LocalBackend.put': (LocalBackend.put, 'mmengine.fileio.backends.local_backend'),
        'LocalBackend.put_text': (LocalBackend.put_text, 'mmengine.fileio.backends.local_backend'),
        'BaseModel.parse_losses': (BaseModel.parse_losses, 'mmengine.model.base_model.base_model'),
        'decode_head.accuracy': (decode_head.accuracy, 'mmseg.models.losses.accuracy'),
        'point_head.accuracy': (point_head.accuracy, 'mmseg.models.losses.accuracy'),
        'BEiT._geometric_sequence_interpolation': (BEiT._geometric_sequence_interpolation,
                                                   'mmseg.models.backbones.beit'),
        'MultiScaleDeformableAttention.forward': (MultiScaleDeformableAttention.forward,
                                                  'mmcv.ops.multi_scale_deform_attn'),
    }


def process_state():
    return dict(signals={s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)},
                tf32=(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      torch.get_float32_matmul_precision()),
                mlflow_file_store=os.environ.get('MLFLOW_ALLOW_FILE_STORE'),  # trackers.mlflow_file_store
                showwarning=warnings.showwarning)  # console.attach: warnings into the run's log file


def test_a_run_leaves_the_libraries_as_it_found_them(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv('MLFLOW_ALLOW_FILE_STORE', raising=False)
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    before, state = library_attributes(), process_state()
    for name, (value, owner) in before.items():
        assert value.__module__ == owner, f'{name} is not the library\'s own before the run: {value.__module__}'
    work = tmp_path / 'work'
    load_script('train_fcn').main(['--data-root', tiny_data, '--work-dir', str(work), *TINY, '--precision', 'bf16',
                                   '--channels-last', 'on', '--max-iters', '2', '--val-interval', '2',
                                   '--tracker', 'tensorboard,mlflow'])  # MLflow's file store: asked for, then not
    assert json.loads((work / 'summary.json').read_text())['status'] == 'finished'
    after = library_attributes()
    changed = [name for name in before if after[name][0] is not before[name][0]]
    assert not changed, f'still replaced after the run: {changed}'
    assert process_state() == state


def test_checkpoints_are_written_through_the_registered_atomic_backend(tiny_data, tmp_path):
    """CheckpointHook names the backend in its backend_args; the run's own config imports the module
    that registers it, so the config builds elsewhere too."""
    from mmengine.config import Config
    from mmengine.fileio import get_file_backend
    from common import checkpoints
    backend = get_file_backend(str(tmp_path), backend_args=dict(checkpoints.BACKEND_ARGS))
    assert type(backend).__name__ == 'AtomicLocalBackend'
    work = tmp_path / 'work'
    load_script('train_fcn').main(['--data-root', tiny_data, '--work-dir', str(work), *TINY,
                                   '--max-iters', '1', '--val-interval', '1'])
    written = Config.fromfile(str(next(work.glob('*/vis_data/config.py'))))
    assert written.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')
    assert 'common.checkpoints' in written.custom_imports.imports
    assert written.optim_wrapper.type == 'GuardedOptimWrapper'
