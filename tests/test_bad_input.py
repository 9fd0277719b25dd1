"""Bad input stops a run before anything is built, with one clear error and exit code 2."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY, load_script


@pytest.fixture
def data(tmp_path):
    from common import demo_data
    return demo_data.write(tmp_path / 'd', n_train=4, n_val=2, size=(64, 48))


def run_fcn(capsys, *args):
    """Run train_fcn in-process; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as stop:
        load_script('train_fcn').main([*TINY, '--max-iters', '1', *args])
    return stop.value.code, capsys.readouterr().err


def fcn_on(capsys, root, tmp_path, *args):
    return run_fcn(capsys, '--data-root', str(root), '--work-dir', str(tmp_path / 'w'), *args)


def test_missing_dataset(capsys, tmp_path):
    code, err = fcn_on(capsys, tmp_path / 'nowhere', tmp_path)
    assert code == 2 and 'dataset not found' in err and 'nowhere' in err and 'download_ade20k' in err
    assert not (tmp_path / 'w').exists(), 'nothing may be written before the checks pass'


def test_parent_folder_given(capsys, data, tmp_path):
    code, err = fcn_on(capsys, data.parent, tmp_path)
    assert code == 2 and f'--data-root {data}' in err


def test_misnamed_folders(capsys, data, tmp_path):
    (data / 'annotations' / 'validation').rename(data / 'annotations' / 'val')
    code, err = fcn_on(capsys, data, tmp_path)
    assert code == 2 and 'annotations/validation' in err and 'annotations/val' in err


def test_image_without_label(capsys, data, tmp_path):
    (data / 'annotations' / 'training' / 'ADE_train_00000002.png').unlink()
    code, err = fcn_on(capsys, data, tmp_path)
    assert code == 2 and 'have no label' in err and 'ADE_train_00000002.jpg' in err


def test_unreadable_image(capsys, data, tmp_path):
    (data / 'images' / 'training' / 'ADE_train_00000003.jpg').write_bytes(b'not a jpeg')
    code, err = fcn_on(capsys, data, tmp_path)
    assert code == 2 and 'unreadable image' in err and 'ADE_train_00000003.jpg' in err and 'train[2]' in err


def test_label_out_of_range(capsys, data, tmp_path):
    label = data / 'annotations' / 'validation' / 'ADE_val_00000001.png'
    values = np.array(Image.open(label))
    values[0, 0] = 200
    Image.fromarray(values).save(label)
    code, err = fcn_on(capsys, data, tmp_path)
    assert code == 2 and 'holds value 200' in err and 'ADE_val_00000001.png' in err


def test_missing_pretrained_file(capsys, data, tmp_path):
    with pytest.raises(SystemExit) as stop:
        load_script('train_fcn').main(['--data-root', str(data), '--work-dir', str(tmp_path / 'w'),
                                       '--crop-size', '64', '--max-iters', '1',
                                       '--pretrained', str(tmp_path / 'resnet50_v1c-2cccc1ad.pth')])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'pretrained file not found' in err
    assert 'python -m common.pretrained fetch resnet50_v1c-2cccc1ad.pth' in err and '--no-pretrained' in err


def test_torchvision_resnet_does_not_fit_resnet_v1c(capsys, data, tmp_path):
    import torch
    import torchvision
    path = tmp_path / 'resnet50-0676ba61.pth'
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(SystemExit) as stop:
        load_script('train_fcn').main(['--data-root', str(data), '--work-dir', str(tmp_path / 'w'),
                                       '--crop-size', '64', '--num-workers', '0', '--max-iters', '1',
                                       '--pretrained', str(path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'does not fit ResNetV1c' in err and 'stem.0.weight' in err
    assert not list((tmp_path / 'w').glob('*.pth')), 'it must refuse before the first iteration'


@pytest.mark.slow
def test_missing_mmcv_op(tmp_path, data):
    """An mmcv without its compiled ops (mmcv-lite, a broken build): one error, exit 2."""
    code = ('import sys, runpy; sys.modules["mmcv._ext"] = None; '
            f'sys.argv = ["train_fcn.py", "--data-root", {str(data)!r}, "--work-dir", {str(tmp_path / "w")!r}, '
            '"--no-pretrained"]; runpy.run_path("train_fcn.py", run_name="__main__")')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert 'mmcv has no compiled ops' in proc.stderr and 'setup.sh' in proc.stderr
    assert 'Traceback' not in proc.stderr
