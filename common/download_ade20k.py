"""Download ADE20K (SceneParsing, ADEChallengeData2016) and unpack it where the scripts look.

    python -m common.download_ade20k                 # -> data/ade/ADEChallengeData2016
    python -m common.download_ade20k --out DIR       # -> DIR/ADEChallengeData2016
    python -m common.download_ade20k --archive FILE  # unpack an archive you already have
                                                     # (--no-checksum: a repacked one, from a mirror)

The sha1 checked is the one published with the widely used ADE20K download scripts.
"""
import argparse
import shutil
import zipfile
from pathlib import Path

from common.download import digest_of, download
from common.errors import SetupError, reported

URL = 'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip'
CHECKSUM = 'sha1:219e1696abb36c8ba3a3afe7fb2f4b4606a897c7'
NAME = 'ADEChallengeData2016'


def unpack(archive, out_dir):
    out_dir = Path(out_dir)
    if not zipfile.is_zipfile(archive):
        raise SetupError(f'{archive} is not a zip archive', 'download ADEChallengeData2016.zip again')
    with zipfile.ZipFile(archive) as zf:
        members = zf.namelist()
        if not any(m.startswith(f'{NAME}/images/') for m in members):
            raise SetupError(f'{archive} does not hold {NAME}/images/', 'is it ADEChallengeData2016.zip?')
        tmp = out_dir / f'.{NAME}.unpacking'
        shutil.rmtree(tmp, ignore_errors=True)
        zf.extractall(tmp)
    target = out_dir / NAME
    shutil.rmtree(target, ignore_errors=True)
    (tmp / NAME).rename(target)  # only a complete tree ever has the real name
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch(out_dir='data/ade', url=URL, checksum=CHECKSUM, archive=None):
    """Download (unless `archive` is given), check, unpack; returns the ADEChallengeData2016 path."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SetupError(f'--out {out_dir} is a file', 'name a folder (it is created if missing)')
    if archive is not None and not Path(archive).is_file():
        raise SetupError(f'--archive {archive} not found', 'name the ADEChallengeData2016.zip you downloaded')
    out_dir.mkdir(parents=True, exist_ok=True)
    if archive is None:
        archive = download(url, out_dir / f'{NAME}.zip', checksum=checksum)
        downloaded = True
    else:
        downloaded = False
        if checksum:
            algorithm, expected = checksum.split(':')
            if not digest_of(archive, algorithm).startswith(expected):
                raise SetupError(f'{archive}: {algorithm} does not match the published {expected}',
                                 'the archive is damaged; download it again')
    target = unpack(archive, out_dir)
    if downloaded:
        Path(archive).unlink()
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/ade', help='folder that will hold ADEChallengeData2016/')
    parser.add_argument('--archive', help='an ADEChallengeData2016.zip already on disk')
    parser.add_argument('--url', default=URL)
    parser.add_argument('--no-checksum', action='store_true',
                        help="don't check the published sha1 (an archive repacked by a mirror)")
    args = parser.parse_args(argv)
    with reported():
        target = fetch(args.out, url=args.url, archive=args.archive,
                       checksum=None if args.no_checksum else CHECKSUM)
    print(f'ADE20K ready at {target}')


if __name__ == '__main__':
    main()
