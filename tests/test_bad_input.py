"""Bad input stops a run before anything is built, with one clear error and exit code 2."""
import json
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


# ---------------------------------------------------------------- files cut short (downloads, unzips)

def cut(path, keep):
    """What an interrupted download or unzip leaves: the file's first `keep` bytes."""
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize('progressive', [False, True])
def test_every_cut_of_a_jpeg_or_png_is_found_and_whole_files_pass(tmp_path, progressive):
    from common import checks
    rng = np.random.default_rng(0)
    image, label = tmp_path / 'a.jpg', tmp_path / 'a.png'
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).save(image, quality=90, progressive=progressive)
    Image.fromarray(rng.integers(0, 151, (24, 32), np.uint8)).save(label)
    jpeg, png = image.read_bytes(), label.read_bytes()
    assert checks.check_pair(image, label) == ''
    for whole, path in ((jpeg, image), (png, label)):
        # Every cut near either end (headers; the end marker and the last data), every 16th between.
        for keep in sorted({*range(1, 40), *range(40, len(whole), 16), *range(len(whole) - 40, len(whole))}):
            path.write_bytes(whole[:keep])
            reason = checks.check_pair(image, label)
            assert reason and str(path) in reason, (path.suffix, keep, len(whole))
            if keep >= 8:  # past the signature: recognised as that format, cut short
                assert reason.startswith(f'truncated {"image" if path is image else "label"}'), (keep, reason)
        path.write_bytes(whole)
    # Whole files with bytes after their end: padding, a trailer some cameras append.
    for tail in (b'\x00' * 100, b'\r\n', b'trailer data \xff\xd8'):
        image.write_bytes(jpeg + tail)
        label.write_bytes(png + tail)
        assert checks.check_pair(image, label) == '', tail


def test_a_truncated_image_and_label_stop_the_run_before_any_model(capsys, data, tmp_path):
    """A JPEG cut at half its bytes (OpenCV would train its top half beside the whole label) and a PNG
    label without its end chunk (every pixel decodes): both named, exit 2, nothing built."""
    image = data / 'images' / 'training' / 'ADE_train_00000002.jpg'
    label = data / 'annotations' / 'validation' / 'ADE_val_00000002.png'
    cut(image, image.stat().st_size // 2)
    cut(label, label.stat().st_size - 12)
    with Image.open(label) as decoded:
        assert np.asarray(decoded).shape == (48, 64), 'the label decodes whole: only its end is missing'
    code, err = fcn_on(capsys, data, tmp_path)
    assert code == 2 and 'Traceback' not in err
    assert f'train[1]: truncated image {image}: cut short at' in err and 'FF D9' in err
    assert f'val[1]: truncated label {label}: cut short at' in err and 'IEND' in err
    assert '--skip-bad-samples' in err and 'download' in err
    assert not (tmp_path / 'w').exists(), 'nothing may be written or built before the checks pass'


def test_truncated_files_are_left_out_with_skip_bad_samples(capfd, data, tmp_path):
    from mmengine.config import Config
    image = data / 'images' / 'training' / 'ADE_train_00000002.jpg'
    label = data / 'annotations' / 'validation' / 'ADE_val_00000002.png'
    cut(image, image.stat().st_size // 2)
    cut(label, label.stat().st_size // 2)
    load_script('train_fcn').main([*TINY, '--max-iters', '2', '--val-interval', '2', '--data-root', str(data),
                                   '--work-dir', str(tmp_path / 'w'), '--skip-bad-samples'])
    out = ''.join(capfd.readouterr())
    assert 'skipping 1 of 4 train samples' in out and 'skipping 1 of 2 val samples' in out
    assert 'truncated image' in out and 'truncated label' in out
    summary = json.loads((tmp_path / 'w' / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['iters_done'] == 2
    (written,) = (tmp_path / 'w').glob('*/vis_data/config.py')  # the config the run trained with
    cfg = Config.fromfile(str(written))
    assert cfg.train_dataloader.dataset.indices == [0, 2, 3]
    assert cfg.val_dataloader.dataset.indices == [0]
    assert '[fcn] evaluating 1 validation image at iter 2' in out, 'validation ran on the one whole pair'


def test_the_check_cache_rechecks_changed_files_and_not_older_results(monkeypatch, data, tmp_path):
    import json as json_
    from common import checks
    monkeypatch.setattr(checks, 'CACHE_DIR', tmp_path / 'cache')
    image = data / 'images' / 'training' / 'ADE_train_00000003.jpg'
    whole = image.read_bytes()
    assert checks.scan(data) == {'train': [], 'val': []}
    cache = checks._cache_file(data)
    assert len(json_.loads(cache.read_text())) == 6  # every pair remembered
    cut(image, len(whole) // 2)  # changed since the cache: checked again
    assert [(i, reason.split(':')[0]) for i, _, _, reason in checks.scan(data)['train']] == \
        [(2, f'truncated image {image}')]
    image.write_bytes(whole)
    assert checks.scan(data) == {'train': [], 'val': []}
    # A result cached by the check before it looked for cuts is not trusted.
    cut(image, len(whole) // 2)
    label = data / 'annotations' / 'training' / 'ADE_train_00000003.png'
    old = {f'{image}|{checks._stamp(image)}|{checks._stamp(label)}': ''}
    cache.write_text(json_.dumps(old))
    assert [i for i, *_ in checks.scan(data)['train']] == [2]
