"""The GPU check (tools/gpu_check/check.py): its dry run on the CPU goes through every measurement and writes
gpu_check.json and gpu_check.md; its deadline, budgets, restarts and missing features behave; the stock
baseline (tools/bench/stock_mmseg_train.py) trains with the packages' own code in a process of its own; the
smoke stage's order and budget; syncs by nature (tools/gpu_check/host_reads.py); gpu_check.sh's two uses;
nothing needs a folder beside the checkout."""
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import traceback
import types
import warnings
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    start = time.time()
    proc = subprocess.run([sys.executable, '-m', 'tools.gpu_check.check', '--dry-run', '--out', str(out),
                           '--work', str(out / 'work')], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    folder = out / 'benchmarks' / 'cpu'
    results = json.loads((folder / 'gpu_check.json').read_text()) if (folder / 'gpu_check.json').is_file() else {}
    return types.SimpleNamespace(proc=proc, folder=folder, results=results, seconds=time.time() - start)


@pytest.mark.slow
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


@pytest.mark.slow
def test_dry_run_smoke_rows(dry_run):
    rows = dry_run.results['stages']['smoke']['scripts']
    assert list(rows) == ['fcn', 'segformer']
    for name, row in rows.items():
        assert row['status'] == 'finished' and row['error'] is None, (name, row)
        assert row['losses_finite'] and math.isfinite(row['loss_first']) and row['loss_first'] > 0
        assert row['iters'] == 1 and row['sec_per_iter'] > 0 and row['img_per_sec'] > 0
        assert row['precision'] == 'fp32' and row['peak_mem_mb'] is None  # a CPU
        assert row['command'].startswith(f'python train_{name}.py ') and '--crop-size 64,64' in row['command']


@pytest.mark.slow
def test_dry_run_speed_and_evaluation(dry_run):
    stages = dry_run.results['stages']
    models = stages['vs_stock']['models']
    assert list(models) == ['fcn', 'segformer']
    for name, row in models.items():
        assert row['ours']['status'] == 'finished' and row['ours']['iters'] == 1, row
    assert models['fcn']['stock']['status'] == 'skipped' and 'dry run' in models['fcn']['stock']['reason']
    stock = models['segformer']['stock']
    assert stock['status'] == 'finished' and stock['img_per_sec'] > 0, stock
    assert models['segformer']['ratio'] == pytest.approx(
        models['segformer']['ours']['img_per_sec'] / stock['img_per_sec'], rel=0.02)
    assert stock['command'].startswith('python tools/bench/stock_mmseg_train.py segformer/segformer_mit-b0_8xb2-160k_ade20k')
    # The baseline ran in a process of its own, after ours had trained in this one (which patches
    # mmengine, mmseg, mmcv and torch: test_this_process_is_not_stock): what that process trained with.
    run = stages['vs_stock']['stock']
    assert run['status'] == 'finished' and run['stock'] is True and run['command'].startswith(
        'python tools/bench/stock_mmseg_train.py ')
    check = stock['stock_check']
    assert check['stock'] is True and check['project_modules'] == [] and check['tf32_as_at_start'], check
    assert check['OptimWrapper.update_params'] == \
        'mmengine.optim.optimizer.optimizer_wrapper.OptimWrapper.update_params', check
    assert check['decode_head.accuracy'] == check['point_head.accuracy'] == 'mmseg.models.losses.accuracy.accuracy'
    assert check['MultiScaleDeformableAttention.forward'] == \
        'mmcv.ops.multi_scale_deform_attn.MultiScaleDeformableAttention.forward'
    assert check['message_hub'] == 'mmengine.logging.message_hub.MessageHub'
    assert dry_run.results['stock_script'] == 'tools/bench/stock_mmseg_train.py'
    for name, row in stages['eval_precision']['models'].items():
        assert row['status'] == 'finished', (name, row)
        assert set(row['runs']) == {'fp32', 'bf16'} and 'vs_stock run' in row['weights']
        for precision, run in row['runs'].items():
            assert run['precision'] == precision and run['images'] == 2 and 0 <= run['mIoU'] <= 100
        assert row['mIoU_diff'] == pytest.approx(row['runs']['bf16']['mIoU'] - row['runs']['fp32']['mIoU'], abs=1e-3)


@pytest.mark.slow
def test_dry_run_writes_the_report_and_logs(dry_run):
    md = (dry_run.folder / 'gpu_check.md').read_text()
    assert md.startswith('# GPU check: cpu') and '**Dry run**' in md
    for text in ('## Measurements', 'python -m tools.gpu_check.check --dry-run', '| fcn | finished |', '| segformer |',
                 'mmseg 1.2.2', '## Budgets', 'python train_fcn.py --eval-only'):
        assert text in md, text
    assert 'smoke: finished' in (dry_run.folder / 'gpu_check.log').read_text()
    with tarfile.open(dry_run.folder / 'gpu_check_logs.tar.gz') as tar:
        names = tar.getnames()
    assert 'logs/smoke_fcn.log' in names and 'logs/eval_segformer_bf16.log' in names and 'logs/stock.log' in names
    assert '| segformer | finished |' in md and 'stock unpatched' in md
    print(f'dry run: {dry_run.seconds:.0f} s')


@pytest.mark.slow
def test_dry_run_prints_which_scripts_work(dry_run):
    out = dry_run.proc.stdout
    assert '2 of 2 scripts work on cpu' in out, out[-3000:]
    table = out[out.index('2 of 2 scripts work on cpu'):].splitlines()
    assert table[1].split() == ['script', 'works', 'precision', 'img/s', 'peak', 'MB', 'note']
    for line, name in zip(table[2:4], ('fcn', 'segformer')):
        cells = line.split()
        assert cells[:3] == [name, 'yes', 'fp32'] and float(cells[3]) > 0 and cells[4] == '-', line  # no GPU memory


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
    from tools.gpu_check.check import Measurement
    return Measurement(name, run, budget, minimum, required, missing)


def test_budgets_deadline_failures_and_missing_features():
    from tools.gpu_check.check import run
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
    from tools.gpu_check.check import run
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
    from tools.gpu_check import stages
    monkeypatch.setattr(stages, 'SYNC_FREE_MODULE', 'common.no_such_feature')
    monkeypatch.setattr(stages, 'EVAL_BATCH_SETTING', 'NO_SUCH_SETTING')
    assert 'common.no_such_feature' in stages.sync_free_missing(None)
    assert 'NO_SUCH_SETTING' in stages.eval_batch_missing(None)
    monkeypatch.setattr(stages, 'SYNC_FREE_MODULE', 'common.speed')
    monkeypatch.setattr(stages, 'EVAL_BATCH_SETTING', 'PRECISION')
    assert stages.sync_free_missing(None) is None and stages.eval_batch_missing(None) is None


# ---------------------------------------------------------------- one run in this process

def test_a_limit_that_expires_inside_a_bare_except_is_still_the_limit(tmp_path):
    """mmengine's config formatting turns whatever it meets into a SyntaxError (`except:`): a run whose
    limit expired there stopped at its limit all the same (exit 124), not with an error of its own."""
    from tools.gpu_check import inprocess

    def formatting(argv):
        try:
            raise inprocess.Overtime('stopped after its limit of 1 s')
        except BaseException:
            raise SyntaxError('Failed to format the config file')

    def reported(argv):  # a training's failure: printed, then exit 1 (common/train.py)
        try:
            formatting(argv)
        except Exception:
            raise SystemExit(1)

    def broken(argv):
        raise SyntaxError('a real one')

    for main in (formatting, reported):
        cut = inprocess._call(main, [], tmp_path / 'cut.log', 60, own_name=True)
        assert cut['exit_code'] == 124 and cut['error'] == 'stopped after its limit of 1 s', main
    failed = inprocess._call(broken, [], tmp_path / 'failed.log', 60, own_name=True)
    assert failed['exit_code'] == 1 and 'a real one' in failed['error']


@pytest.mark.slow
def test_a_run_in_this_process_stops_at_its_limit_then_the_next_run_records_its_iterations(tiny_data, tmp_path):
    from tools.gpu_check import inprocess
    flags = ['--data-root', tiny_data, '--crop-size', '64', '--batch-per-gpu', '2', '--num-workers', '0']
    # A run's imports first, with time to spare: a limit that expired inside an import would leave that
    # module half-initialised for the next run (as when this file runs before any other imported them).
    warm = inprocess.train('segformer', [*flags, '--max-iters', '1'], tmp_path / 'warm', tmp_path / 'warm.log', 300,
                           key='test_warm')
    assert warm['exit_code'] == 0, warm.get('log_tail')
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


# ---------------------------------------------------------------- the stock baseline is stock

def load_stock_baseline():
    import importlib.util
    spec = importlib.util.spec_from_file_location('stock_mmseg_train', ROOT / 'tools' / 'bench' / 'stock_mmseg_train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_this_process_is_not_stock(tiny_data, tmp_path):
    """The other half of the dry run's stock_check: in a process where one of our scripts has trained,
    the same check says it is not stock, and names each of this project's replacements in place."""
    import importlib
    from mmseg.models.decode_heads import decode_head
    from tools.gpu_check import inprocess
    flags = ['--data-root', tiny_data, '--crop-size', '64', '--batch-per-gpu', '2', '--num-workers', '0',
             '--max-iters', '1']
    run = inprocess.train('segformer', flags, tmp_path / 'run', tmp_path / 'run.log', 300, key='test_not_stock')
    assert run['exit_code'] == 0, run.get('log_tail')
    check = load_stock_baseline().stock_check()
    assert check['stock'] is False and 'common.train' in check['project_modules'], check
    if decode_head.accuracy is not importlib.import_module('mmseg.models.losses.accuracy').accuracy:
        assert "(not mmseg's own: code in common/" in check['decode_head.accuracy'], check


def test_the_stock_check_tells_a_replacement_from_the_packages_own(monkeypatch):
    """A wrapper made with functools.wraps carries the wrapped function's name: the check goes by
    where the code is. mmcv's deformable attention, which mmengine's deprecation decorator wraps, is stock."""
    import functools
    from mmengine.optim import OptimWrapper
    from mmseg.models.decode_heads import decode_head
    baseline = load_stock_baseline()
    clean = baseline.stock_check()
    assert clean['MultiScaleDeformableAttention.forward'] == \
        'mmcv.ops.multi_scale_deform_attn.MultiScaleDeformableAttention.forward'
    assert 'MultiScaleDeformableAttention.forward' not in clean['not_own']
    original = OptimWrapper.update_params

    @functools.wraps(original)
    def update_params(self, *args, **kwargs):
        return original(self, *args, **kwargs)
    monkeypatch.setattr(OptimWrapper, 'update_params', update_params)
    monkeypatch.setattr(decode_head, 'accuracy', lambda *args, **kwargs: None)
    check = baseline.stock_check()
    assert check['stock'] is False and {'OptimWrapper.update_params', 'decode_head.accuracy'} <= set(check['not_own'])
    assert check['OptimWrapper.update_params'] == (
        "mmengine.optim.optimizer.optimizer_wrapper.OptimWrapper.update_params (not mmengine's own: code in "
        'tests/test_gpu_check.py)'), check
    assert "(not mmseg's own: code in tests/test_gpu_check.py)" in check['decode_head.accuracy']


def test_the_stock_baseline_refuses_bad_arguments(tiny_data):
    proc = subprocess.run([sys.executable, 'tools/bench/stock_mmseg_train.py', 'fcn/no_such_config.py', '--data-root',
                           tiny_data, '--iters', '3', '--warmup', '3'], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'fcn/no_such_config.py is not a config of the installed mmsegmentation' in proc.stderr
    assert 'need 0 <= warmup < iters' in proc.stderr and '-> ' in proc.stderr


def test_the_baseline_imports_nothing_of_this_project():
    import ast
    tree = ast.parse((ROOT / 'tools' / 'bench' / 'stock_mmseg_train.py').read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [n for n in names if n.split('.')[0] in ('common', 'tools', 'conftest')], names


def test_a_process_past_its_limit_is_stopped_with_its_children(tmp_path):
    """The stock baseline's time limit (vs_stock.run): its whole session goes, data loader workers too."""
    from tools.bench import vs_stock

    def alive(pid):
        try:
            return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] not in 'ZX'
        except (FileNotFoundError, IndexError):
            return False
    child, sessions = tmp_path / 'child', []
    start = time.time()
    code, out = vs_stock.run(['bash', '-c', f'sleep 120 & echo $! > {child}; echo started; wait'], tmp_path / 'run.log',
                             2, started=sessions.append)
    assert code == 124 and time.time() - start < 60
    assert 'started' in out and 'stopped after its limit of 2 s' in out and out == (tmp_path / 'run.log').read_text()
    time.sleep(0.5)
    assert len(sessions) == 1 and not alive(sessions[0]) and not alive(int(child.read_text()))


# ---------------------------------------------------------------- nothing needs a folder outside the repository

def test_no_file_outside_ci_names_the_folder_beside_the_checkout():
    """What a user runs may not need a folder beside the checkout that users do not have."""
    beside = '..' + '/shared'  # spelled apart, so this file does not name it
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # committed, and new files not ignored
    if listed.returncode != 0:
        pytest.skip('not a git checkout')
    found = []
    for name in filter(None, listed.stdout.split('\0')):
        path = ROOT / name
        if name.startswith('.ci/') or not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        found += [f'{name}:{i}: {line.strip()}' for i, line in enumerate(text.splitlines(), 1) if beside in line]
    assert not found, '\n'.join(found)


# ---------------------------------------------------------------- the smoke stage's order and budget

def test_the_smoke_stage_takes_the_likeliest_failures_first_and_the_core_last():
    from common import scripts
    from tools.bench import vs_stock
    from tools.gpu_check import stages
    names = scripts.all_names()
    order = stages.smoke_order(names)
    assert sorted(order) == sorted(names) and len(order) == len(set(order)) == 39
    assert order[:10] == ['psanet', 'dmnet', 'ccnet', 'pointrend', 'maskformer', 'mask2former', 'knet', 'stdc',
                          'beit', 'mae']
    assert order[-5:] == [n for n in vs_stock.CORE if n != 'mask2former']  # vs_stock trains them again
    subset = ['fcn', 'ann', 'mae', 'psanet', 'apcnet']
    assert stages.smoke_order(subset) == ['psanet', 'mae', 'ann', 'apcnet', 'fcn']


def test_every_script_fits_the_smoke_budget():
    """The smoke budget is planned from each script's measured set-up (check.SMOKE_MEASURED, the
    dry run on a CPU) plus SMOKE_GPU_S: a new script needs its measurement, and the 39 must fit."""
    from common import scripts
    from tools.gpu_check import check
    measured = json.loads(check.SMOKE_MEASURED.read_text())['scripts']
    assert sorted(measured) == scripts.all_names(), 'measure the new scripts (benchmarks/README.md: the GPU check)'
    need = sum(row['setup_s'] for row in measured.values()) + len(measured) * check.SMOKE_GPU_S
    smoke = next(m for m in check.MEASUREMENTS if m.name == 'smoke')
    assert need <= smoke.budget_s, f'{len(measured)} scripts need about {need:.0f} s; the smoke budget: {smoke.budget_s} s'
    for row in measured.values():
        assert row['setup_s'] == pytest.approx(row['seconds'] - row['sec_per_iter'], abs=0.01)


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    for flags, text in ((['--scripts', 'fcn,no_such_model'], 'no train_no_such_model.py'),
                        (['--only', 'smoke,speed'], 'there is no measurement speed'),
                        (['--stock-script', str(tmp_path / 'none.py')], 'the stock baseline')):
        proc = subprocess.run([sys.executable, '-m', 'tools.gpu_check.check', '--dry-run', '--out', str(tmp_path),
                               '--work', str(tmp_path / 'work'), *flags], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2 and text in proc.stderr and '  -> ' in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'work').exists()


# ---------------------------------------------------------------- syncs by nature (tools/gpu_check/host_reads.py)

def frames(*places):
    """A stack, outermost first: (file, function) pairs as traceback.extract_stack gives them."""
    return [traceback.FrameSummary(f'/venv/lib/python3.11/site-packages/{file}', 10 + i, name, lookup_line=False)
            for i, (file, name) in enumerate(places)]


LOOP = ('mmengine/runner/loops.py', 'run_iter')
MATCHER_SYNC = frames(LOOP, ('mmseg/models/decode_heads/mask2former_head.py', 'loss'),
                      ('mmdet/models/dense_heads/mask2former_head.py', '_get_targets_single'),
                      ('mmdet/models/task_modules/assigners/hungarian_assigner.py', 'assign'),
                      ('torch/_tensor.py', '__array__'))
STEP_SYNC = frames(LOOP, ('mmengine/optim/optimizer/optimizer_wrapper.py', 'update_params'),
                   ('torch/_tensor.py', 'item'))


def test_a_sync_is_by_nature_only_in_the_places_of_a_script_that_has_them():
    from tools.gpu_check import host_reads
    place = 'mmdet/models/task_modules/assigners/hungarian_assigner.py:13 assign'  # the innermost of its places
    assert host_reads.by_nature(MATCHER_SYNC, 'mask2former') == place
    assert host_reads.by_nature(MATCHER_SYNC, 'train_maskformer') == place
    assert host_reads.by_nature(MATCHER_SYNC, 'fcn') is None  # FCN has no reads by nature
    assert host_reads.by_nature(MATCHER_SYNC, 'stdc') is None  # STDC's are OHEM's
    assert host_reads.by_nature(STEP_SYNC, 'mask2former') is None  # the matcher script's other syncs
    ohem = frames(LOOP, ('mmseg/structures/sampler/ohem_pixel_sampler.py', 'sample'), ('torch/_tensor.py', 'item'))
    assert host_reads.by_nature(ohem, 'stdc') == 'mmseg/structures/sampler/ohem_pixel_sampler.py:11 sample'


def test_syncs_by_nature_are_counted_and_any_other_fails():
    from tools.gpu_check import host_reads
    syncs = host_reads.Syncs('mask2former')
    syncs.seen(MATCHER_SYNC)
    syncs.seen(MATCHER_SYNC)
    assert syncs.expected == {'mmdet/models/task_modules/assigners/hungarian_assigner.py:13 assign': 2}
    with pytest.raises(RuntimeError, match='called a synchronizing CUDA operation .not one of mask2former') as err:
        syncs.seen(STEP_SYNC)
    assert 'mmengine/optim/optimizer/optimizer_wrapper.py:11 update_params' in str(err.value)
    with pytest.raises(RuntimeError):
        host_reads.Syncs('fcn').seen(MATCHER_SYNC)


def test_sync_warnings_are_decided_from_the_stack_they_come_from(monkeypatch):
    """What torch does in 'warn' mode, played on the CPU: a UserWarning from the Python frame that
    called the syncing op. Code compiled under a matcher's file name stands for the matcher."""
    from tools.gpu_check import host_reads
    source = "import warnings\ndef assign():\n    warnings.warn('called a synchronizing CUDA operation')\n"
    matcher, elsewhere = {}, {}
    exec(compile(source, '/venv/site-packages/mmdet/models/task_modules/assigners/hungarian_assigner.py', 'exec'),
         matcher)
    exec(compile(source, '/venv/site-packages/mmengine/optim/optimizer/optimizer_wrapper.py', 'exec'), elsewhere)
    shown = []
    monkeypatch.setattr(warnings, 'showwarning', lambda message, *args, **kwargs: shown.append(str(message)))
    syncs, before = host_reads.Syncs('mask2former'), warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter('always')  # pytest.ini ignores UserWarning; here every warning is shown
        with syncs.recording():
            for _ in range(3):  # each one counted, not only the first of its line
                matcher['assign']()
            warnings.warn('an unrelated warning')  # not a sync: shown as before
            with pytest.raises(RuntimeError, match='optimizer_wrapper.py:3 assign'):
                elsewhere['assign']()
        assert warnings.showwarning is before and syncs.expected == {
            'mmdet/models/task_modules/assigners/hungarian_assigner.py:3 assign': 3}
    assert shown == ['an unrelated warning']


# ---------------------------------------------------------------- tools/gpu_check/gpu_check.sh

@pytest.fixture
def check_copy(tmp_path):
    """gpu_check.sh in a checkout of its own (it works from the repository root, two folders above
    its own), with a .venv/bin/python that records how it is called, and a wheel to install."""
    script = tmp_path / 'tools' / 'gpu_check' / 'gpu_check.sh'
    script.parent.mkdir(parents=True)
    script.write_text((ROOT / 'tools' / 'gpu_check' / 'gpu_check.sh').read_text())
    python = tmp_path / '.venv' / 'bin' / 'python'
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n')
    python.chmod(0o755)
    (tmp_path / '.gpu-wheels').mkdir()
    (tmp_path / '.gpu-wheels' / 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl').write_text('not a wheel')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    return types.SimpleNamespace(root=tmp_path, calls=python.parent / 'calls', env=env)


def test_the_check_with_a_venv_installs_nothing(check_copy):
    proc = subprocess.run(['bash', 'tools/gpu_check/gpu_check.sh', '--out', '/tmp/x', '--only', 'smoke'],
                          cwd=check_copy.root, env=check_copy.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 'installing nothing' in proc.stdout
    calls = check_copy.calls.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith('-m tools.gpu_check.check --started-at ')  # never `-m pip`
    assert calls[0].endswith(' --out /tmp/x --only smoke')


def test_prepare_takes_the_wheel_folder_as_its_argument(check_copy, tmp_path_factory):
    def prepare(*args):
        return subprocess.run(['bash', 'tools/gpu_check/gpu_check.sh', '--prepare', *args], cwd=check_copy.root,
                              env=check_copy.env, capture_output=True, text=True, timeout=60)
    for args in ((), (str(tmp_path_factory.mktemp('empty')),)):
        proc = prepare(*args)
        assert proc.returncode == 2 and 'ERROR: --prepare needs the folder of the wheels' in proc.stderr
        assert '-> bash tools/gpu_check/gpu_check.sh --prepare WHEEL_DIR' in proc.stderr
    wheels = tmp_path_factory.mktemp('wheels')
    (wheels / 'mmengine-0.10.7-py3-none-any.whl').write_text('not a wheel')
    proc = prepare(str(wheels))
    assert proc.returncode == 0 and 'prepared .gpu-wheels/: 2 wheels' in proc.stdout, proc.stderr
    assert (check_copy.root / '.gpu-wheels' / 'mmengine-0.10.7-py3-none-any.whl').is_file()
