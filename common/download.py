"""Download a file with a progress bar, resume-safe (write to .part, then rename), hash-checked."""
import hashlib
import os
import sys
import time
import urllib.request
from pathlib import Path

from common.errors import SetupError

CHUNK = 1 << 20


def digest_of(path, algorithm='sha256'):
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def _progress(done, total, start, name):
    rate = done / max(time.time() - start, 1e-6)
    if total:
        pct = done / total
        bar = '#' * int(30 * pct)
        eta = (total - done) / rate if rate else 0
        line = f'\r{name}: [{bar:<30}] {pct:6.1%} {done / 2**20:8.1f}/{total / 2**20:.1f} MiB ' \
               f'{rate / 2**20:6.1f} MiB/s ETA {eta:5.0f}s'
    else:
        line = f'\r{name}: {done / 2**20:8.1f} MiB {rate / 2**20:6.1f} MiB/s'
    sys.stderr.write(line)
    sys.stderr.flush()


def download(url, dest, checksum=None, timeout=60):
    """Fetch `url` to `dest`. `checksum` is 'ALGORITHM:HEX' (e.g. 'sha256:2cccc1ad'); HEX may be a
    prefix (the published file names of OpenMMLab and torchvision weights end in the first 8 hex
    digits of their sha256). A mismatch deletes the download and raises SetupError."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    start = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, 'wb') as out:
            total = int(response.headers.get('Content-Length') or 0)
            done = 0
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                _progress(done, total, start, dest.name)
        sys.stderr.write('\n')
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise SetupError(f'download of {url} failed: {exc}',
                         f'check the network, or download it by hand to {dest}') from None
    if checksum:
        algorithm, expected = checksum.split(':')
        actual = digest_of(part, algorithm)
        if not actual.startswith(expected.lower()):
            part.unlink()
            raise SetupError(f'{url}: {algorithm} {actual} does not match the expected {expected}',
                             'the download is damaged or the file changed upstream; try again')
    os.replace(part, dest)
    return dest
