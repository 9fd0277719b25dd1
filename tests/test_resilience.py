"""Nothing lost: real training subprocesses killed, pre-empted, diverging, out of disk, on bad data,
and on two processes. Faults are injected at exact points with ADE_TRAIN_FAULT (common/faults.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY

pytestmark = pytest.mark.slow  # every test here trains

SCRIPT = 'train_segformer.py'  # small (3.7M parameters): checkpoints write fast
MAX_ITERS = 6


def train(work, data, fault=None, extra=(), timeout=600, launcher=(sys.executable,), fault_rank=None):
    env = dict(os.environ)
    env.pop('ADE_TRAIN_FAULT', None)
    env.pop('ADE_TRAIN_FAULT_RANK', None)
    if fault:
        env['ADE_TRAIN_FAULT'] = fault
    if fault_rank is not None:
        env['ADE_TRAIN_FAULT_RANK'] = str(fault_rank)
    cmd = [*launcher, SCRIPT, '--data-root', data, '--work-dir', str(work), *TINY,
           '--max-iters', str(MAX_ITERS), '--val-interval', '2', *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def summary(work):
    return json.loads((Path(work) / 'summary.json').read_text())


def logged(work, key):
    """{step: value} of a scalar over every launch of a work dir (a resumed run has several)."""
    values = {}
    for path in sorted(Path(work).glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if key in record:
                values[record['step']] = record[key]
    return values


@pytest.fixture(scope='module')
def unbroken(tiny_data, tmp_path_factory):
    work = tmp_path_factory.mktemp('unbroken')
    proc = train(work, tiny_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


def assert_same_end(work, unbroken_work):
    """Resumed to the end: same iterations, same LR schedule position, a best-mIoU record."""
    done, ref = summary(work), summary(unbroken_work)
    assert done['status'] == 'finished' and done['iters_done'] == ref['iters_done'] == MAX_ITERS
    assert logged(work, 'lr')[MAX_ITERS] == pytest.approx(logged(unbroken_work, 'lr')[MAX_ITERS])
    assert done['best_mIoU'] is not None
    final = torch.load(Path(work) / f'iter_{MAX_ITERS}.pth', map_location='cpu', weights_only=False)
    assert final['meta']['iter'] == MAX_ITERS
    assert 'optimizer' in final and 'param_schedulers' in final
    assert not list(Path(work).glob('.*.tmp')), 'no temporary file may be left behind'


@pytest.mark.parametrize('fault, resumes_from, in_evaluation', [
    ('sigkill@iter=3', 2, False),  # between iterations
    ('sigkill@val=5', 4, True),    # inside the second evaluation (3 images each; its iter_4.pth is written)
    ('sigkill@val=8', 6, True),    # inside the last one: iter_6.pth is there, yet the run has not finished
    ('sigkill@save=3', 2, True),   # halfway through writing best_mIoU_iter_2.pth, at the end of the first
                                   # evaluation (save 1: iter_2.pth, 2: last_checkpoint)
])
def test_kill_9_then_the_same_command_resumes(fault, resumes_from, in_evaluation, tiny_data, tmp_path, unbroken):
    one_by_one = ('--eval-batch', '1')  # an evaluation is 3 validation iterations, as counted above
    killed = train(tmp_path, tiny_data, fault, extra=one_by_one)
    assert killed.returncode == -signal.SIGKILL
    proc = train(tmp_path, tiny_data, extra=one_by_one)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(tmp_path)['start_iter'] == resumes_from
    assert_same_end(tmp_path, unbroken)
    # Every evaluation is in the run's log: one that the kill cut short was done again on resume.
    assert set(logged(tmp_path, 'mIoU')) == {2, 4, 6}
    assert ('evaluating iteration' in proc.stdout + proc.stderr) == in_evaluation
    assert not (tmp_path / 'eval_interrupted').exists()


def test_pointer_to_a_missing_checkpoint_falls_back_to_the_newest_complete_one(tiny_data, tmp_path, unbroken):
    assert train(tmp_path, tiny_data, 'sigkill@iter=5').returncode == -signal.SIGKILL
    (tmp_path / 'last_checkpoint').write_text('')  # as if killed while the pointer was being written
    (tmp_path / 'iter_4.pth').write_bytes((tmp_path / 'iter_4.pth').read_bytes()[:1000])  # a torn file
    proc = train(tmp_path, tiny_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(tmp_path)['start_iter'] == 2


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_preemption_saves_and_exits_cleanly(signum, tiny_data, tmp_path, unbroken):
    fault = 'sigterm@iter=3'
    if signum == signal.SIGINT:
        # Ctrl-C from outside: wait for the first logged iteration, then interrupt.
        env = dict(os.environ)
        env.pop('ADE_TRAIN_FAULT', None)
        cmd = [sys.executable, SCRIPT, '--data-root', tiny_data, '--work-dir', str(tmp_path), *TINY,
               '--max-iters', '400', '--val-interval', '200']
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if line.split()[1:3] == ['iter', '3/400']:  # the console's progress line
                proc.send_signal(signal.SIGINT)
                break
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
        state = summary(tmp_path)
        assert state['status'].startswith('interrupted') and (tmp_path / f'iter_{state["iters_done"]}.pth').is_file()
        return
    stopped = train(tmp_path, tiny_data, fault)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert 'Traceback' not in stopped.stderr
    assert summary(tmp_path)['status'].startswith('interrupted') and (tmp_path / 'iter_3.pth').is_file()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_3.pth')
    proc = train(tmp_path, tiny_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(tmp_path)['start_iter'] == 3
    assert_same_end(tmp_path, unbroken)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    proc = train(tmp_path, tiny_data, 'nan@iter=3')
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert 'non-finite loss at iteration 3' in proc.stderr and 'decode.loss_ce=nan' in proc.stderr
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')
    weights = torch.load(tmp_path / 'iter_2.pth', map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert summary(tmp_path)['status'].startswith('diverged')


def test_nan_loss_can_be_skipped_instead(tiny_data, tmp_path):
    proc = train(tmp_path, tiny_data, 'nan@iter=3', extra=('--on-nonfinite-loss', 'skip'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'step skipped (1 so far)' in proc.stdout + proc.stderr
    weights = torch.load(tmp_path / f'iter_{MAX_ITERS}.pth', map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_disk_full_while_saving(tiny_data, tmp_path):
    proc = train(tmp_path, tiny_data, 'enospc@save=3')
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'No space left on device' in proc.stderr and 'iter_2.pth is complete' in proc.stderr
    from common import checkpoints
    assert checkpoints.load(tmp_path / 'iter_2.pth')['meta']['iter'] == 2
    assert not (tmp_path / 'iter_4.pth').exists() and not list(tmp_path.glob('.*.tmp'))


def test_bad_samples_can_be_skipped_and_are_counted(tmp_path):
    from common import demo_data
    data = demo_data.write(tmp_path / 'd', n_train=8, n_val=3, size=(80, 64))
    (data / 'images' / 'training' / 'ADE_train_00000004.jpg').write_bytes(b'broken')
    refused = train(tmp_path / 'w1', str(data))
    assert refused.returncode == 2 and 'train[3]: unreadable image' in refused.stderr
    proc = train(tmp_path / 'w2', str(data), extra=('--skip-bad-samples',))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'skipping 1 of 8 train samples' in proc.stdout + proc.stderr


TORCHRUN = (sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')


def test_two_process_ddp_trains_evaluates_resumes_like_one_process(tiny_data, tmp_path, unbroken):
    """torchrun, 2 CPU processes (gloo), 1 image each: the same total batch as one process with 2."""
    first = train(tmp_path, tiny_data, 'sigterm@iter=3', extra=('--batch-per-gpu', '1'), launcher=TORCHRUN)
    assert first.returncode != 0 and (tmp_path / 'iter_3.pth').is_file(), first.stderr[-3000:]
    proc = train(tmp_path, tiny_data, extra=('--batch-per-gpu', '1'), launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state, single = summary(tmp_path), summary(unbroken)
    assert state['world_size'] == 2 and state['total_batch'] == single['total_batch'] == 2
    assert state['start_iter'] == 3 and state['iters_done'] == MAX_ITERS and state['mIoU'] is not None
    # Not bit-identical on CPUs: mmengine logs rank 0's loss (its one image) where one process logs the
    # mean of two, BN sees 1 image instead of 2 (SyncBN is GPU-only) and each rank augments with its
    # own random stream. Same total batch, schedule and iterations are exact; the loss is the same
    # magnitude.
    loss_ddp, loss_single = logged(tmp_path, 'loss')[1], logged(unbroken, 'loss')[1]
    assert 0.5 < loss_ddp / loss_single < 2
    assert logged(tmp_path, 'lr')[MAX_ITERS] == pytest.approx(logged(unbroken, 'lr')[MAX_ITERS])
    # Only rank 0 writes: one log per launch, one summary, no per-rank files.
    assert len(list(tmp_path.glob('*/*.log'))) == 2
    # ...and only rank 0 prints: one progress line per iteration (LOG_INTERVAL 1), one summary per evaluation.
    lines = proc.stdout.splitlines()
    progress = [line.split()[2] for line in lines if line.split()[1:2] == ['iter']]
    assert progress == [f'{i}/{MAX_ITERS}' for i in range(4, MAX_ITERS + 1)], proc.stdout
    assert sum(line.split()[1:3] == ['eval', 'iter'] for line in lines) == 2
    assert not any('Loads checkpoint' in line for line in lines)
    assert 'Iter(train)' not in proc.stdout and all('Iter(train)' in log.read_text() for log in tmp_path.glob('*/*.log'))


def test_a_dead_rank_takes_the_other_down_at_once(tiny_data, tmp_path):
    """Rank 1 is SIGKILLed at iteration 3: rank 0 fails at its next collective (no 30-minute wait),
    says why in summary.json, and torchrun names the rank that died first."""
    start = time.time()
    proc = train(tmp_path, tiny_data, 'sigkill@iter=3', fault_rank=1, launcher=TORCHRUN,
                 extra=('--batch-per-gpu', '1', '--max-iters', '50', '--val-interval', '25'))
    assert proc.returncode != 0
    assert time.time() - start < 120, 'the surviving rank must not wait for a timeout'
    assert 'local_rank: 1' in proc.stderr and 'Signal 9 (SIGKILL)' in proc.stderr, proc.stderr[-3000:]
    state = summary(tmp_path)
    assert state['status'].startswith('failed') and state['iters_done'] < 50, state['status']


def _train_in_own_group(work, data, fault, extra=(), launcher=(sys.executable,)):
    """A training process started as SLURM, `timeout` or `setsid` do: its own process group, which
    the test signals as a whole (main process, dataloader workers, torchrun's ranks alike)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('ADE_TRAIN_FAULT')}
    env.update(ADE_TRAIN_FAULT=fault, ADE_TRAIN_FAULT_MARK=str(Path(work) / 'paused'))
    cmd = [*launcher, SCRIPT, '--data-root', data, '--work-dir', str(work), *TINY, '--num-workers', '2',
           '--max-iters', str(MAX_ITERS), '--val-interval', '2', *extra]
    Path(work).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _signal_group_when_paused(proc, work, ranks=1, signum=signal.SIGTERM):
    marks = [Path(work) / f'paused.{rank}' for rank in range(ranks)]
    deadline = time.time() + 300
    while not all(m.is_file() for m in marks):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, 'the run never reached its pause'
        time.sleep(0.1)
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.parametrize('where, stops_at', [('iter=3', 3), ('val=2', 2)])
def test_sigterm_to_the_whole_process_group_saves_and_resumes(where, stops_at, tiny_data, tmp_path, unbroken):
    """As SLURM pre-empts: every process of the job gets SIGTERM, the 2 dataloader workers too,
    during training (iteration 3) or during the evaluation of iteration 2."""
    proc = _train_in_own_group(tmp_path, tiny_data, f'pause@{where}')
    code, err = _signal_group_when_paused(proc, tmp_path)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert 'DataLoader worker' not in err and 'Traceback' not in err, err[-3000:]
    state = summary(tmp_path)
    assert state['status'].startswith('interrupted') and state['iters_done'] == stops_at
    assert (tmp_path / f'iter_{stops_at}.pth').is_file()
    resumed = train(tmp_path, tiny_data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(tmp_path)['start_iter'] == stops_at
    assert_same_end(tmp_path, unbroken)
    if where.startswith('val'):  # the evaluation the signal cut short is done again on resume
        assert 'evaluating iteration 2 again' in resumed.stdout + resumed.stderr
        assert set(logged(tmp_path, 'mIoU')) == set(logged(unbroken, 'mIoU')) == {2, 4, 6}
        assert not (tmp_path / 'eval_interrupted').exists()


def test_sigterm_to_a_torchrun_group_saves_and_resumes(tiny_data, tmp_path, unbroken):
    """torchrun, 2 ranks with 2 workers each, all signalled at once (torchrun forwards its copy too)."""
    proc = _train_in_own_group(tmp_path, tiny_data, 'pause@iter=3', extra=('--batch-per-gpu', '1'),
                               launcher=TORCHRUN)
    code, err = _signal_group_when_paused(proc, tmp_path, ranks=2)
    assert code != 0 and 'DataLoader worker' not in err, err[-3000:]
    state = summary(tmp_path)
    assert state['status'].startswith('interrupted') and state['iters_done'] == 3, state['status']
    assert (tmp_path / 'iter_3.pth').is_file()
    resumed = train(tmp_path, tiny_data, extra=('--batch-per-gpu', '1'), launcher=TORCHRUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(tmp_path)['start_iter'] == 3 and summary(tmp_path)['iters_done'] == MAX_ITERS
