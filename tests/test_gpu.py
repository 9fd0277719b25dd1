"""A GPU that torch cannot use stops the run before anything is built, with the fix; --device cpu is
the explicit way to train on the CPU anyway. The GPU is a stand-in `nvidia-smi` on PATH, as the
driver's own tool would list it (this machine has none)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY

A100_535 = 'NVIDIA A100-SXM4-80GB, 535.104.05, 8.0'


@pytest.fixture
def a100_with_driver_535(tmp_path):
    """PATH with an nvidia-smi that lists one A100 on driver 535 (torch here is a CUDA 13.0 build)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    smi = bin_dir / 'nvidia-smi'
    smi.write_text(f'#!/bin/sh\necho "{A100_535}"\n')
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != 'CUDA_VISIBLE_DEVICES'}
    env['PATH'] = f'{bin_dir}:{env["PATH"]}'
    return env


def run(env, *args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_an_unusable_gpu_stops_the_demo_with_the_driver_and_the_fix(a100_with_driver_535, tmp_path):
    import torch
    proc = run(a100_with_driver_535, 'train_fcn.py', '--demo', '--work-dir', str(tmp_path / 'w'))
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    assert 'NVIDIA A100-SXM4-80GB (driver 535.104.05' in err and f'CUDA {torch.version.cuda}' in err
    assert 'needs NVIDIA driver >= 580' in err and 'TORCH_CUDA=cu128 bash setup.sh' in err
    assert '--device cpu' in err and 'Traceback' not in err
    assert not (tmp_path / 'w').exists(), 'nothing may be built or written'


def test_env_check_is_not_ok_on_an_unusable_gpu(a100_with_driver_535):
    proc = run(a100_with_driver_535, '-m', 'common.env_check')
    assert proc.returncode == 1 and '[env_check] FAILED' in proc.stderr and 'A100' in proc.stderr
    assert 'ok:' not in proc.stdout


@pytest.mark.slow
def test_device_cpu_trains_on_the_cpu_anyway(a100_with_driver_535, tiny_data, tmp_path):
    proc = run(a100_with_driver_535, 'train_fcn.py', '--device', 'cpu', '--data-root', tiny_data,
               '--work-dir', str(tmp_path / 'w'), *TINY, '--max-iters', '1', '--val-interval', '1')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'w' / 'summary.json').is_file()


def test_no_gpu_no_problem(tmp_path):
    from common import gpu
    assert gpu.problem(gpus=[], torch_cuda_available=False, torch_version='2.13.0', built_for='13.0') is None
    assert gpu.problem(gpus=[('H100', '580.65', '9.0')], torch_cuda_available=True) is None
    hidden = gpu.problem(gpus=[('H100', '535.1', '9.0')], torch_cuda_available=False, torch_version='2.13.0',
                         built_for='13.0', env={'CUDA_VISIBLE_DEVICES': ''})
    assert hidden is None, 'GPUs hidden on purpose are a choice, not a problem'


@pytest.mark.parametrize('driver, built_for, expected', [
    ('535.104.05', '13.0', ['driver >= 580', 'TORCH_CUDA=cu128']),   # 12.x: minor-version compatibility
    ('570.86', '13.0', ['driver >= 580', 'TORCH_CUDA=cu128']),
    ('470.82', '13.0', ['driver >= 580']),            # too old for every torch build setup.sh offers
    ('590.10', '13.0', ['driver is new enough', 'nvidia-smi']),
    ('535.104.05', None, ['CPU-only build', 'bash setup.sh']),
])
def test_the_fix_fits_the_driver(driver, built_for, expected):
    from common import gpu
    what, fix = gpu.problem(gpus=[('NVIDIA L4', driver, '8.9')], torch_cuda_available=False,
                            torch_version='2.13.0', built_for=built_for, env={})
    text = f'{what} -> {fix}'
    for part in expected:
        assert part in text, text
    assert '--device cpu' in fix
    if driver.startswith('470'):
        assert 'TORCH_CUDA' not in fix


def test_missing_cuda_ops_stop_a_model_that_needs_them_on_the_gpu(monkeypatch):
    """A GPU torch can use with an mmcv built without CUDA ops (CPU ops only): PSANet's PSAMask would
    fail at its first iteration on the GPU, so the run stops first. (No GPU here: torch is told it has
    one; the rest is the real check.)"""
    import torch
    from common import checks, cli, gpu, scripts
    from common.errors import SetupError
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(gpu, 'problem', lambda: None)
    monkeypatch.setattr(checks, 'mmcv_ops_status', lambda: (True, False))
    module = scripts.load('psanet', ROOT)
    with pytest.raises(SetupError, match='PSAMask on the GPU') as err:
        checks.device(module.build_config(cli.parse(vars(module), [])))
    assert 'bash setup.sh' in err.value.fix
    fcn = scripts.load('fcn', ROOT)
    checks.device(fcn.build_config(cli.parse(vars(fcn), [])))  # FCN needs no CUDA op: goes on
