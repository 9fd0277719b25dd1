"""What a run shows on the console and what its log file keeps (common/console.py)."""
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, load_script

ITERS = 4
pytestmark = pytest.mark.slow  # trainings


def train(work, data, *extra):
    """The console of `python train_fcn.py ...`, as a user sees it (a process of its own: pytest
    captures Python warnings itself)."""
    proc = subprocess.run([sys.executable, 'train_fcn.py', '--data-root', data, '--work-dir', str(work), *TINY,
                           '--backbone', 'r18-d8', '--max-iters', str(ITERS), '--val-interval', '2',
                           '--log-interval', '2', *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_the_console_shows_progress_evaluations_and_the_end_and_the_log_keeps_the_rest(tiny_data, tmp_path, capfd):
    console = train(tmp_path, tiny_data)
    lines = console.splitlines()
    # Banner, then one progress line per LOG_INTERVAL, with the numbers a person watches.
    assert lines[0].startswith('[fcn] ') and 'total batch' in console
    progress = [line for line in lines if line.startswith('[fcn] iter ')]
    assert [line.split()[2] for line in progress] == ['2/4', '4/4']
    for line in progress:
        for field in ('loss ', 'lr ', ' s/iter', ' img/s', 'ETA '):
            assert field in line, line
    # Each evaluation: its means and the best so far, and where its per-class table is.
    evals = [line for line in lines if line.startswith('[fcn] eval iter ')]
    assert len(evals) == 2 and all(('mIoU ' in e and 'mAcc ' in e and 'aAcc ' in e and '(best ' in e) for e in evals)
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert f'mIoU {summary["mIoU"]:.2f}' in evals[-1]
    # The end: where things are and the command that evaluates the best checkpoint.
    end = [line for line in lines if line.startswith('[fcn] evaluate: ')]
    assert len(end) == 1 and '--eval-only' in end[0]
    assert any(line.startswith('[fcn] log: ') for line in lines)
    # Left out of the console, kept in the log file: environment, config, hooks, mmengine's lines,
    # the class table, library warnings.
    log = next(tmp_path.glob('*/*.log')).read_text()
    for kept in ('System environment', 'Config:', 'Hooks will be executed', 'Iter(train) [2/4]',
                 'per class results', '|         wall        |', 'UserWarning'):
        assert kept in log, kept
        assert kept not in console, kept
    assert len(lines) < 25, console
    # The class table is also a file, with the run's numbers.
    rows = list(csv.DictReader(open(tmp_path / 'per_class' / f'iter_{ITERS}.csv')))
    assert len(rows) == 150 and rows[0]['name'] == 'wall'
    ious = [float(r['IoU']) for r in rows if r['IoU']]
    assert sum(ious) / len(ious) == pytest.approx(summary['mIoU'], abs=0.01)
    assert f'mIoU {summary["mIoU"]:.2f}' in (tmp_path / 'per_class' / f'iter_{ITERS}.md').read_text()

    # The printed evaluate command works and scores what the run's evaluation scored.
    command = shlex.split(end[0].split('evaluate: ', 1)[1])
    assert command[:2] == ['python', 'train_fcn.py']
    load_script('fcn').main(command[2:] + ['--out', str(tmp_path / 'eval')])
    capfd.readouterr()
    scored = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert scored['mIoU'] == pytest.approx(summary['best_mIoU'], abs=0.01)


def test_verbose_shows_mmengine_output_on_the_console(tiny_data, tmp_path, capfd):
    console = train(tmp_path, tiny_data, '--max-iters', '2', '--verbose')
    for shown in ('System environment', 'Iter(train) [2/2]', 'per class results', '[fcn] iter 2/2', 'UserWarning'):
        assert shown in console, shown
