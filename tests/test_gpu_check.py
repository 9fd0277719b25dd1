"""The GPU check (common/gpu_check.py): its dry run on the CPU goes through every measurement and writes
gpu_check.json and gpu_check.md; its deadline, budgets, restarts and missing features behave."""
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import types

import pytest

from conftest import ROOT


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    start = time.time()
    proc = subprocess.run([sys.executable, '-m', 'common.gpu_check', '--dry-run', '--out', str(out),
                           '--work', str(out / 'work')], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    folder = out / 'benchmarks' / 'cpu'
    results = json.loads((folder / 'gpu_check.json').read_text()) if (folder / 'gpu_check.json').is_file() else {}
    return types.SimpleNamespace(proc=proc, folder=folder, results=results, seconds=time.time() - start)


def test_dry_run_finishes_every_measurement(dry_run):
    r = dry_run.results
    assert dry_run.proc.returncode == 0, dry_run.proc.stdout[-3000:] + dry_run.proc.stderr[-3000:]
    assert r['finished'] and r['dry_run'] and r['gpu']['slug'] == 'cpu' and r['versions']['mmseg'] == '1.2.2'
    assert list(r['stages']) == ['env', 'data', 'smoke', 'vs_stock', 'eval_precision', 'sync_free', 'eval_batch']
    for name in ('env', 'data', 'smoke', 'vs_stock', 'eval_precision'):
        stage = r['stages'][name]
        assert stage['status'] == 'finished', (name, stage)
        assert 0 <= stage['seconds'] <= stage['budget_s'] <= r['budgets'][name]['planned_s']  # a tiny stage rounds to 0.0
    assert r['stages']['env']['ops'] == {'PSAMask': 'ok', 'MultiScaleDeformableAttention': 'ok'}
    assert r['stages']['data']['classes'] == 150 and r['stages']['data']['val_images'] == 2
    for name in ('sync_free', 'eval_batch'):  # features on their way: either is fine, never an error
        stage = r['stages'][name]
        assert stage['status'] in ('not available', 'finished'), stage
        assert stage['status'] == 'finished' or stage['reason']
    assert r['elapsed_s'] < 60 * r['deadline_min']


def test_dry_run_smoke_rows(dry_run):
    rows = dry_run.results['stages']['smoke']['scripts']
    assert list(rows) == ['fcn', 'segformer']
    for name, row in rows.items():
        assert row['status'] == 'finished' and row['error'] is None, (name, row)
        assert row['losses_finite'] and math.isfinite(row['loss_first']) and row['loss_first'] > 0
        assert row['iters'] == 1 and row['sec_per_iter'] > 0 and row['img_per_sec'] > 0
        assert row['precision'] == 'fp32' and row['peak_mem_mb'] is None  # a CPU
        assert row['command'].startswith(f'python train_{name}.py ') and '--crop-size 64,64' in row['command']


def test_dry_run_speed_and_evaluation(dry_run):
    stages = dry_run.results['stages']
    models = stages['vs_stock']['models']
    assert list(models) == ['fcn', 'segformer']
    for name, row in models.items():
        assert row['ours']['status'] == 'finished' and row['ours']['iters'] == 1, row
    assert models['fcn']['stock']['status'] == 'skipped' and 'dry run' in models['fcn']['stock']['reason']
    stock = models['segformer']['stock']
    if dry_run.results['stock_script']:
        assert stock['status'] == 'finished' and stock['img_per_sec'] > 0, stock
        assert models['segformer']['ratio'] == pytest.approx(
            models['segformer']['ours']['img_per_sec'] / stock['img_per_sec'], rel=0.02)
        assert 'segformer_mit-b0_8xb2-160k_ade20k-512x512.py' in stock['command']
    else:
        assert stock['status'] == 'skipped' and 'stock_mmseg_train.py' in stock['reason']
    for name, row in stages['eval_precision']['models'].items():
        assert row['status'] == 'finished', (name, row)
        assert set(row['runs']) == {'fp32', 'bf16'} and 'vs_stock run' in row['weights']
        for precision, run in row['runs'].items():
            assert run['precision'] == precision and run['images'] == 2 and 0 <= run['mIoU'] <= 100
        assert row['mIoU_diff'] == pytest.approx(row['runs']['bf16']['mIoU'] - row['runs']['fp32']['mIoU'], abs=1e-3)


def test_dry_run_writes_the_report_and_logs(dry_run):
    md = (dry_run.folder / 'gpu_check.md').read_text()
    assert md.startswith('# GPU check: cpu') and '**Dry run**' in md
    for text in ('## Measurements', 'python -m common.gpu_check --dry-run', '| fcn | finished |', '| segformer |',
                 'mmseg 1.2.2', '## Budgets', 'python train_fcn.py --eval-only'):
        assert text in md, text
    assert 'smoke: finished' in (dry_run.folder / 'gpu_check.log').read_text()
    with tarfile.open(dry_run.folder / 'gpu_check_logs.tar.gz') as tar:
        names = tar.getnames()
    assert 'logs/smoke_fcn.log' in names and 'logs/eval_segformer_bf16.log' in names
    print(f'dry run: {dry_run.seconds:.0f} s')


# ---------------------------------------------------------------- the schedule, without running anything

class FakeContext:
    def __init__(self, deadline_s, stages=None):
        self.results = dict(stages=stages or {}, started_at=time.time())
        self.deadline = time.time() + deadline_s
        self.stage = self.stage_name = None
        self.saves = 0

    def save(self, logs=False):
        self.saves += 1

    def echo(self, line):
        pass


def measurement(name, run, budget=10, minimum=5, required=False, missing=None):
    from common.gpu_check import Measurement
    return Measurement(name, run, budget, minimum, required, missing)


def test_budgets_deadline_failures_and_missing_features():
    from common.gpu_check import run
    calls = []

    def ok(ctx):
        calls.append(ctx.stage_name)
        assert ctx.stage_deadline <= ctx.deadline
        return dict(status='finished')

    def broken(ctx):
        raise ValueError('boom')

    def slow(ctx):  # takes 25 s of the time left
        result = ok(ctx)
        ctx.deadline -= 25
        return result
    ctx = FakeContext(deadline_s=40)
    done = run([measurement('a', ok, required=True), measurement('b', broken),
                measurement('c', ok, missing=lambda ctx: 'feature X is not in this checkout'),
                measurement('d', slow, budget=100, minimum=20), measurement('e', ok, minimum=30)], ctx)
    stages = ctx.results['stages']
    assert not done and calls == ['a', 'd']
    # a: 10 planned, less the minimum of b, d and e (55 s > the 40 left): its own minimum of 5
    assert stages['a']['status'] == 'finished' and stages['a']['budget_s'] == 5
    assert stages['b']['status'] == 'failed' and stages['b']['error'] == 'ValueError: boom'
    assert stages['c'] == dict(status='not available', reason='feature X is not in this checkout')
    # d: 100 planned, 40 - 30 (e's minimum) = 10, raised to its own minimum of 20
    assert stages['d']['status'] == 'finished' and stages['d']['budget_s'] == 20
    assert stages['e']['status'] == 'skipped' and 'deadline: 15 s left' in stages['e']['reason']
    assert ctx.saves >= 5


def test_a_failed_required_measurement_skips_the_rest_and_resume_keeps_what_finished():
    from common.gpu_check import run
    calls = []

    def ok(ctx):
        calls.append(ctx.stage_name)
        return dict(status='finished')
    ctx = FakeContext(60, stages={'a': dict(status='finished'), 'b': dict(status='running', seconds=3.0)})
    assert run([measurement('a', ok), measurement('b', ok), measurement('c', ok)], ctx)
    assert calls == ['b', 'c'] and ctx.results['stages']['b']['seconds'] >= 3.0

    ctx = FakeContext(60)
    assert not run([measurement('a', lambda ctx: dict(status='failed'), required=True), measurement('b', ok)], ctx)
    assert ctx.results['stages']['b'] == dict(status='skipped', reason='a did not finish')


def test_the_optional_features_report_why_they_are_missing(monkeypatch):
    from common import gpu_stages
    monkeypatch.setattr(gpu_stages, 'SYNC_FREE_MODULE', 'common.no_such_feature')
    monkeypatch.setattr(gpu_stages, 'EVAL_BATCH_SETTING', 'NO_SUCH_SETTING')
    assert 'common.no_such_feature' in gpu_stages.sync_free_missing(None)
    assert 'NO_SUCH_SETTING' in gpu_stages.eval_batch_missing(None)
    monkeypatch.setattr(gpu_stages, 'SYNC_FREE_MODULE', 'common.speed')
    monkeypatch.setattr(gpu_stages, 'EVAL_BATCH_SETTING', 'PRECISION')
    assert gpu_stages.sync_free_missing(None) is None and gpu_stages.eval_batch_missing(None) is None


# ---------------------------------------------------------------- one run in this process

def test_a_run_in_this_process_stops_at_its_limit_then_the_next_run_records_its_iterations(tiny_data, tmp_path):
    from common import inprocess
    flags = ['--data-root', tiny_data, '--crop-size', '64', '--batch-per-gpu', '2', '--num-workers', '0']
    cut = inprocess.train('segformer', [*flags, '--max-iters', '50'], tmp_path / 'cut', tmp_path / 'cut.log', 1.0,
                          key='test_cut')
    assert cut['exit_code'] == 124 and 'limit of 1 s' in cut['error'] and cut['log_tail']

    run = inprocess.train('segformer', [*flags, '--max-iters', '3'], tmp_path / 'run', tmp_path / 'run.log', 300,
                          sync_check=True, key='test_run')
    assert run['exit_code'] == 0 and 'error' not in run, run.get('log_tail')
    assert run['summary']['status'] == 'finished' and run['summary']['iters_done'] == 3
    assert len(run['losses']) == len(run['times']) == 3 and all(math.isfinite(v) for v in run['losses'])
    assert run['summary']['mIoU'] is None, 'no evaluation in a check run'
    assert not list((tmp_path / 'run').glob('*.pth')), 'no checkpoint unless asked'
    assert run['sync_checked'] is False and run['armed_iters'] == 0  # no CUDA here: nothing to check
    assert 'gpu_check' not in inprocess.RECORDS and 'test_run' not in inprocess.RECORDS
    assert 'GpuCheckProbe' in (tmp_path / 'run.log').read_text()
