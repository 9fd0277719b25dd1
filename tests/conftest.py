"""Shared fixtures: a tiny ADE20K-layout dataset made once per session, and script loading; the
tests' temporary folders in memory where there is room."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCRIPTS = sorted(p.stem for p in ROOT.glob('train_*.py'))

SHM = Path('/dev/shm')
SHM_NEEDED = 12 * 2 ** 30  # a few GB at a time (a BEiT or MAE test's checkpoints), with room to spare


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """tmp_path in /dev/shm where it has room: the trainings write GBs of checkpoints, each flushed to
    disk (files.atomic_write's fsync), and a virtual disk past its burst rate made the training tests a
    quarter slower (K-Net's per-script test: 50 s with tmp_path on disk, 38 s in /dev/shm). A test's
    folder goes when it passes (pytest.ini); what is left, pytest empties at the next session's start.
    A --basetemp given on the command line wins."""
    if config.option.basetemp or not (SHM.is_dir() and os.access(SHM, os.W_OK)):
        return
    stats = os.statvfs(SHM)
    if stats.f_bavail * stats.f_frsize >= SHM_NEEDED:
        config.option.basetemp = str(SHM / f'ade20k-tests-{os.getuid()}')


# Tiny-run flags: small crops and data so a script trains 2 iterations and evaluates in seconds.
TINY = ['--crop-size', '64', '--batch-per-gpu', '2', '--num-workers', '0', '--log-interval', '1',
        '--no-pretrained']

# What a GPU run turns on by default (common/speed.py 'auto', EVAL_BATCH 0 on a GPU), forced on a CPU.
GPU_SETTINGS = ['--precision', 'bf16', '--channels-last', 'on', '--fused-optimizer', 'on', '--eval-batch', '8']


def load_script(name):
    """Import train_<x>.py as a module (nothing runs at import)."""
    from common import scripts
    return scripts.load(name, ROOT)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    from common import demo_data
    return str(demo_data.write(tmp_path_factory.mktemp('tiny'), n_train=8, n_val=3, size=(80, 64)))


@pytest.fixture(scope='session')
def mixed_data(tmp_path_factory):
    """tiny_data with images of two sizes (landscape, portrait): batched evaluation then groups
    them into batches of different shapes, as ADE20K's validation images are."""
    from common import demo_data
    return str(demo_data.write(tmp_path_factory.mktemp('mixed'), n_train=8, n_val=4, size=[(80, 64), (64, 88)]))


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)
