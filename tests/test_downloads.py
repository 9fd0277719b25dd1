"""The real download code (pretrained weights, ADE20K), served by a local HTTP server."""
import hashlib
import http.server
import threading
import zipfile
from functools import partial

import pytest

from common import pretrained
from common.errors import SetupError


@pytest.fixture
def server(tmp_path):
    root = tmp_path / 'served'
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()


def test_fetch_checks_the_hash_in_the_file_name(server, tmp_path, monkeypatch, capsys):
    root, url = server
    payload = b'weights' * 1000
    name = f'backbone-{hashlib.sha256(payload).hexdigest()[:8]}.pth'
    (root / name).write_bytes(payload)
    monkeypatch.setattr(pretrained, 'PRETRAIN_DIR', tmp_path / 'pretrain')
    monkeypatch.setitem(pretrained.FILES, name, (f'{url}/{name}', 'test weights', 'tests'))
    pretrained.main(['fetch', name])
    assert (tmp_path / 'pretrain' / name).read_bytes() == payload
    assert '100.0%' in capsys.readouterr().err  # the progress bar reached the end


def test_fetch_rejects_a_damaged_download(server, tmp_path, monkeypatch):
    root, url = server
    name = 'backbone-00000000.pth'
    (root / name).write_bytes(b'not the published file')
    monkeypatch.setattr(pretrained, 'PRETRAIN_DIR', tmp_path / 'pretrain')
    monkeypatch.setitem(pretrained.FILES, name, (f'{url}/{name}', 'test weights', 'tests'))
    with pytest.raises(SetupError, match='does not match'):
        pretrained.fetch(name)
    assert not list((tmp_path / 'pretrain').glob('*')), 'a bad download is not left behind'


def test_pretrain_readme_lists_every_file():
    readme = (pretrained.PRETRAIN_DIR / 'README.md').read_text()
    assert readme == pretrained.readme_text(), 'run `python -m common.pretrained readme`'
    for name, (url, _, _) in pretrained.FILES.items():
        assert name in readme and url in readme


def test_ade20k_download_unpacks_the_layout(server, tmp_path):
    from common import demo_data, download_ade20k
    root, url = server
    made = demo_data.write(tmp_path / 'src', n_train=2, n_val=1, size=(32, 24))
    archive = root / 'ADEChallengeData2016.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        for path in made.rglob('*'):
            zf.write(path, path.relative_to(made.parent))
    out = download_ade20k.fetch(tmp_path / 'data' / 'ade', url=f'{url}/ADEChallengeData2016.zip', checksum=None)
    assert (out / 'images' / 'training' / 'ADE_train_00000001.jpg').is_file()
    assert (out / 'annotations' / 'validation' / 'ADE_val_00000001.png').is_file()
    assert not (tmp_path / 'data' / 'ade' / 'ADEChallengeData2016.zip').exists(), 'archive removed after unpacking'


def test_a_missing_converted_file_names_the_fetch_and_convert_commands():
    with pytest.raises(SetupError) as err:
        pretrained.require('pretrain/deit_small_patch16_224-cd65a155_mmseg.pth')
    assert 'python -m common.pretrained fetch deit_small_patch16_224-cd65a155.pth' in err.value.fix
    assert 'python -m common.convert_vit pretrain/deit_small_patch16_224-cd65a155.pth' in err.value.fix
