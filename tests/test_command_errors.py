"""The commands users run besides the scripts (common.pretrained, convert_vit, download_ade20k) stop on a
wrong input the way the scripts do: one message naming what is wrong and what to do, exit code 2, no
traceback (issue 14). bench.sh's options and `tools.bench.bench collect` are in tests/test_bench.py."""
import subprocess
import sys
import zipfile

import pytest
import torch

from conftest import ROOT


def command(*args):
    proc = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert 'Traceback' not in out, out[-3000:]
    return proc.returncode, out


def test_fetching_an_unknown_pretrained_file():
    code, out = command('common.pretrained', 'fetch', 'resnet51-00000000.pth')
    assert code == 2 and 'unknown pretrained file resnet51-00000000.pth' in out
    assert 'python -m common.pretrained list' in out


def test_fetching_nothing_says_how():
    code, out = command('common.pretrained', 'fetch')
    assert code == 2 and 'name the files to fetch, or --all' in out


@pytest.fixture
def resnet_checkpoint(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}, path)
    return path


def test_convert_vit_refuses_a_checkpoint_that_is_not_a_vit(resnet_checkpoint, tmp_path):
    code, out = command('common.convert_vit', str(resnet_checkpoint), str(tmp_path / 'out.pth'))
    assert code == 2 and 'not a timm/DeiT VisionTransformer checkpoint' in out
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('make, expected', [
    (lambda p: None, 'not found'),
    (lambda p: p.write_text('not a checkpoint'), str()),
], ids=['missing', 'not-a-checkpoint'])
def test_convert_vit_on_a_file_it_cannot_read(make, expected, tmp_path):
    src = tmp_path / 'vit.pth'
    make(src)
    code, out = command('common.convert_vit', str(src))
    assert code == 2 and str(src) in out and expected in out
    assert not (tmp_path / 'vit_mmseg.pth').exists()


def test_convert_vit_will_not_overwrite_its_source(resnet_checkpoint):
    code, out = command('common.convert_vit', str(resnet_checkpoint), str(resnet_checkpoint))
    assert code == 2 and 'the source would be overwritten' in out


@pytest.mark.parametrize('case', ['missing', 'not-a-zip', 'wrong-zip', 'out-is-a-file'])
def test_download_ade20k_on_a_wrong_archive_or_folder(case, tmp_path):
    archive, out_dir = tmp_path / 'ADEChallengeData2016.zip', tmp_path / 'data'
    if case == 'not-a-zip':
        archive.write_text('an HTML error page')
    if case in ('wrong-zip', 'out-is-a-file'):
        with zipfile.ZipFile(archive, 'w') as zf:
            zf.writestr('something/else.txt', 'x')
    if case == 'out-is-a-file':
        out_dir.write_text('')
    # The published sha1 cannot match these stand-ins: the checks before it are what is tested.
    code, out = command('common.download_ade20k', '--archive', str(archive), '--out', str(out_dir),
                        '--no-checksum')
    expected = {'missing': f'{archive} not found', 'not-a-zip': 'is not a zip archive',
                'wrong-zip': 'does not hold ADEChallengeData2016/images/',
                'out-is-a-file': f'{out_dir} is a file'}[case]
    assert code == 2 and expected in out, out


def test_download_ade20k_checks_the_published_checksum(tmp_path):
    archive = tmp_path / 'ADEChallengeData2016.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.writestr('ADEChallengeData2016/images/training/a.jpg', 'x')
    code, out = command('common.download_ade20k', '--archive', str(archive), '--out', str(tmp_path / 'data'))
    assert code == 2 and 'does not match the published' in out and 'download it again' in out


def test_download_ade20k_from_an_address_that_does_not_answer(tmp_path):
    code, out = command('common.download_ade20k', '--url', 'http://127.0.0.1:9/ADEChallengeData2016.zip',
                        '--out', str(tmp_path / 'data'))
    assert code == 2 and 'download of http://127.0.0.1:9/ADEChallengeData2016.zip failed' in out
