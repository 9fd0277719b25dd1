"""The benchmark commands (tools/bench/). bench.sh end to end on a CPU: three scripts (FCN, SegFormer,
PSPNet) train 2 iterations on the tiny dataset, a fourth script that fails is recorded while the loop
goes on, and the table, CSV, charts, complexity cache and training curves come out right. Then the
data-throughput command on a script's own pipeline, and our script beside stock MMSegmentation.

The benchmark runs in a temporary copy of the repository (common/, tools/bench/, bench.sh, the three
scripts and a broken one), so the broken script never appears among the real train_*.py."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, load_script

SCRIPTS = ['train_fcn', 'train_segformer', 'train_pspnet']
SCRIPT_FLAGS = ['--crop-size', '64', '--batch-per-gpu', '2', '--num-workers', '0', '--log-interval', '1']


def bench_sh(repo, *args):
    return subprocess.run(['bash', 'bench.sh', *args], cwd=repo, env=dict(os.environ, PY=sys.executable),
                          capture_output=True, text=True, timeout=850)


def copy_code(repo):
    """What bench.sh runs besides the train scripts: common/, tools/bench/ and bench.sh itself."""
    skip = shutil.ignore_patterns('__pycache__')
    shutil.copytree(ROOT / 'common', repo / 'common', ignore=skip)
    (repo / 'tools').mkdir(parents=True)
    shutil.copy(ROOT / 'tools' / '__init__.py', repo / 'tools')
    shutil.copytree(ROOT / 'tools' / 'bench', repo / 'tools' / 'bench', ignore=skip)
    shutil.copy(ROOT / 'bench.sh', repo)


@pytest.fixture(scope='module')
def bench(tiny_data, tmp_path_factory):
    """(repo copy, finished bench.sh process): every train_*.py of the copy, 2 iterations each,
    the final evaluation on 2 of the 3 validation images, FLOPs counted at 64x64 to keep it quick."""
    repo = tmp_path_factory.mktemp('repo')
    copy_code(repo)
    for name in SCRIPTS:
        shutil.copy(ROOT / f'{name}.py', repo)
    # Fails after its setup checks pass, as a real bug would: the decode head is not registered.
    broken = (ROOT / 'train_fcn.py').read_text().replace("type='FCNHead'", "type='NoSuchHead'")
    assert 'NoSuchHead' in broken
    (repo / 'train_broken.py').write_text(broken)
    result = bench_sh(repo, '--gpus', '0', '--iters', '2', '--name', 'tiny', '--data-root', tiny_data,
                      '--eval-images', '2', '--flops-size', '64', '--', *SCRIPT_FLAGS)
    print(result.stdout, result.stderr)
    return repo, result


def read_csv(path):
    with open(path, newline='') as handle:
        return {row['model']: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_every_script_runs_and_a_failure_is_recorded(bench):
    repo, result = bench
    assert result.returncode == 1, 'exit status 1: one model failed'
    out = result.stdout
    assert '[1/4] broken: training (elapsed 0m00s, ETA ?)' in out, 'train_*.py found by glob, in order'
    assert '[4/4] segformer' in out and 'ETA ' in out
    assert '[1/4] broken: FAILED (exit 1)' in out and 'NoSuchHead' in out, 'the error is shown as it happens'
    assert '3 of 4 models ran' in out

    rows = read_csv(repo / 'benchmarks/tiny/results.csv')
    assert set(rows) == {'broken', 'fcn', 'pspnet', 'segformer'}
    for name in SCRIPTS:
        row, reference = rows[name.removeprefix('train_')], load_script(name).REFERENCE
        assert row['status'] == 'ok' and row['error'] == ''
        assert float(row['img_per_sec']) > 0 and float(row['sec_per_iter']) > 0
        assert 0 <= float(row['data_time_share']) <= 1
        assert 0 <= float(row['mIoU']) <= 100 and row['iters_done'] == '2' and row['crop_size'] == '64x64'
        assert float(row['params_m']) > 0 and float(row['gflops']) > 0
        assert row['max_mem_mb'] == '' and float(row['max_rss_mb']) > 0, 'CPU: no GPU memory, the RSS instead'
        assert float(row['ref_mIoU']) == reference['mIoU'] and float(row['ref_fps']) == reference['fps']
        assert float(row['ref_mem_gb']) == reference['mem_gb'] and row['recipe'] == reference['config']
    assert rows['segformer']['variant'] == 'mit-b0' and float(rows['segformer']['params_m']) < 10
    assert float(rows['fcn']['params_m']) > 40

    failed = rows['broken']
    assert failed['status'] == 'failed' and failed['exit_code'] == '1'
    assert failed['error'].startswith('KeyError') and 'NoSuchHead' in failed['error']
    assert failed['img_per_sec'] == '' and failed['ref_mIoU'] == '35.94', 'the reference still shown'

    run = repo / 'work_dirs/bench/tiny/fcn'
    assert (run / 'summary.json').is_file() and (run / 'stdout.log').is_file()
    assert not list(run.glob('*.pth')), 'the checkpoints of a benchmark run are deleted'
    command = (run / 'bench_run.txt').read_text()
    assert 'train_fcn.py --max-iters 2 --val-interval 2' in command and '--no-pretrained' in command


@pytest.mark.slow
def test_markdown_table(bench):
    repo, _ = bench
    text = (repo / 'benchmarks/tiny/results.md').read_text()
    assert '| model | variant | params (M) | GFLOPs 64x64 | img/s |' in text
    for name in ('fcn', 'pspnet', 'segformer'):
        assert f'| {name} |' in text
    assert '| 35.94 | 8.5 | 23.49 | ok |' in text, 'FCN beside its reference mIoU, memory and fps'
    assert '## Failed' in text and '**broken** (exit code 1)' in text and 'NoSuchHead' in text
    assert 'the final evaluation on 2 validation images' in text
    assert '![training img/s and peak memory per model](speed_memory.png)' in text


@pytest.mark.slow
def test_charts_are_pictures(bench):
    repo, _ = bench
    for name in ('speed_memory.png', 'miou_vs_speed.png'):
        with Image.open(repo / 'benchmarks/tiny' / name) as picture:
            assert picture.format == 'PNG' and picture.width >= 800 and picture.height >= 300


@pytest.mark.slow
def test_evaluation_subset_is_symlinks(bench, tiny_data):
    repo, _ = bench
    subset = repo / 'work_dirs/bench/tiny/data/ADEChallengeData2016'
    images = sorted((subset / 'images/validation').iterdir())
    assert len(images) == 2 and all(p.is_symlink() for p in images)
    assert (subset / 'images/training').resolve() == (Path(tiny_data) / 'images/training').resolve()
    assert len(list((subset / 'annotations/validation').iterdir())) == 2


@pytest.mark.slow
def test_complexity_is_cached(bench, monkeypatch):
    from tools.bench import complexity
    repo, _ = bench
    cache = repo / 'benchmarks/complexity_cache.json'
    entries = json.loads(cache.read_text())
    assert {e['script'] for e in entries.values()} == set(SCRIPTS), 'the broken model is not cached'
    assert all(e['size'] == [64, 64] for e in entries.values())

    def must_not_measure(*args, **kwargs):
        raise AssertionError('measured again although cached')
    monkeypatch.setattr(complexity, 'measure', must_not_measure)
    found = complexity.lookup('train_fcn', None, (64, 64), cache, root=repo)
    assert round(found['params'] / 1e6, 2) == float(read_csv(repo / 'benchmarks/tiny/results.csv')['fcn']['params_m'])
    with pytest.raises(AssertionError, match='measured again'):
        complexity.lookup('train_fcn', None, (96, 96), cache, root=repo)  # another size: not in the cache


@pytest.mark.slow
def test_bad_models_variants_and_options_are_refused_before_anything_runs(bench, tiny_data):
    repo, _ = bench
    result = bench_sh(repo, '--gpus', '3', '--iters', '0', '--eval-images', 'some', '--name', 'bad',
                      '--data-root', tiny_data, 'nosuchmodel', 'fcn:r77-d8', 'segformer')
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert 'there is no train_nosuchmodel.py' in err and "'r77-d8' is not a BACKBONE of train_fcn.py" in err
    assert '--gpus 3: this machine has 0 GPU(s)' in err and '--iters 0' in err and '--eval-images some' in err
    assert 'Traceback' not in err and not (repo / 'work_dirs/bench/bad').exists(), 'nothing may run'


@pytest.mark.slow
def test_bad_option_is_refused(bench):
    repo, _ = bench
    result = bench_sh(repo, '--itres', '5')
    assert result.returncode == 2 and 'unknown option --itres' in result.stderr


@pytest.mark.slow
def test_a_timed_out_model_keeps_its_checkpoint_and_is_recorded_as_timed_out(bench, tiny_data):
    """bench.sh's timeout signals the whole process group, dataloader workers included: the script
    saves its current iteration like a pre-emption, and the loop goes on to the table."""
    repo, _ = bench
    result = bench_sh(repo, '--gpus', '0', '--iters', '100000', '--timeout', '45', '--name', 'slow',
                      '--data-root', tiny_data, '--eval-images', '2', '--flops-size', '64', 'fcn', '--',
                      *SCRIPT_FLAGS[:4], '--num-workers', '2', '--log-interval', '1')
    assert result.returncode == 1 and 'fcn: TIMED OUT (exit 124)' in result.stdout, result.stdout + result.stderr
    run = repo / 'work_dirs/bench/slow/fcn'
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'].startswith('interrupted'), summary['status']
    assert (run / f"iter_{summary['iters_done']}.pth").is_file(), 'the checkpoint of the stopped run is kept'
    assert 'DataLoader worker' not in (run / 'stderr.log').read_text()
    row = read_csv(repo / 'benchmarks/slow/results.csv')['fcn']
    assert row['status'] == 'timed out' and 'checkpoint kept' in row['error']


@pytest.mark.slow
def test_curves_command_overlays_runs(bench, tmp_path):
    repo, _ = bench
    out = tmp_path / 'curves.png'
    runs = [repo / 'work_dirs/bench/tiny/fcn', repo / 'work_dirs/bench/tiny/segformer']
    result = subprocess.run([sys.executable, '-m', 'tools.bench.plots', 'curves', *map(str, runs), '--out', str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as picture:
        assert picture.format == 'PNG' and picture.width >= 800


def test_curves_merge_a_resumed_run(tmp_path):
    """Two launches of one run: the resumed one restarted at step 3, so its steps 3..4 replace the first's."""
    from tools.bench import plots

    def launch(folder, records):
        path = tmp_path / 'run' / folder / 'vis_data'
        path.mkdir(parents=True)
        (path / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records))
    launch('20260101_000000', [dict(loss=4.0, step=1), dict(loss=3.0, step=2), dict(loss=9.0, step=3),
                               dict(loss=9.0, step=4), dict(mIoU=1.0, aAcc=5.0, step=4)])
    launch('20260102_000000', [dict(loss=2.0, step=3), dict(loss=1.5, step=4), dict(mIoU=7.0, aAcc=9.0, step=4),
                               dict(loss=1.0, step=5)])
    train, evals = plots.read_scalars(tmp_path / 'run')
    assert [(r['step'], r['loss']) for r in train] == [(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.5), (5, 1.0)]
    assert [(r['step'], r['mIoU']) for r in evals] == [(4, 7.0)]
    assert plots.curves([tmp_path / 'run'], tmp_path / 'c.png').is_file()


@pytest.mark.parametrize('stderr, expected', [
    ('noise\nERROR: dataset not found: data/x does not exist\n  -> download it\n',
     'dataset not found: data/x does not exist -> download it'),
    ('Traceback (most recent call last):\n  File "x.py"\nKeyError: \'NoSuchHead is not in the registry\'\n'
     '[rank0]: ...\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n====\n',
     "KeyError: 'NoSuchHead is not in the registry'"),
    ('[rank0]: RuntimeError: CUDA out of memory\n', 'RuntimeError: CUDA out of memory'),
    ('just a last line\n\n', 'just a last line'),
])
def test_error_line_from_stderr(stderr, expected):
    from tools.bench import bench
    assert bench.error_from_stderr(stderr) == expected


@pytest.mark.slow
def test_a_head_variant_is_benchmarked_with_its_own_reference(tiny_data, tmp_path):
    """`model:variant` sets HEAD in a script that has no BACKBONE: MobileNetV2 with the FCN head
    trains as that recipe and its row carries that recipe's reference mIoU, not DeepLabV3's."""
    repo = tmp_path / 'repo'
    copy_code(repo)
    shutil.copy(ROOT / 'train_mobilenetv2.py', repo)
    result = bench_sh(repo, '--gpus', '0', '--iters', '2', '--name', 'head', '--data-root', tiny_data,
                      '--eval-images', '2', '--flops-size', '64', 'mobilenetv2:fcn', '--', *SCRIPT_FLAGS)
    assert result.returncode == 0, result.stdout + result.stderr
    run = repo / 'work_dirs/bench/head/mobilenetv2-fcn'
    assert ' --head fcn ' in (run / 'bench_run.txt').read_text()
    assert json.loads((run / 'summary.json').read_text())['variant'] == 'fcn'
    row = read_csv(repo / 'benchmarks/head/results.csv')['mobilenetv2']
    assert row['status'] == 'ok' and row['variant'] == 'fcn'
    assert float(row['ref_mIoU']) == 19.71 and row['recipe'].endswith('mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512.py')
    assert float(row['gflops']) > 0


# ---------------------------------------------------------------- data_speed and vs_stock

def test_data_speed_measures_the_scripts_own_pipeline(tiny_data, tmp_path, capsys):
    from tools.bench import data_speed
    out = tmp_path / 'data.json'
    result = data_speed.main(['train_pspnet.py', '--data-root', tiny_data, '--crop-size', '64',
                              '--workers', '0,1', '--batches', '4', '--target', '50', '--json', str(out)])
    assert [r['workers'] for r in result['rows']] == [0, 1]
    assert all(r['img_per_sec'] > 0 and r['batch_size'] == 2 for r in result['rows'])
    assert result['workers_for_target'] >= 1 and json.loads(out.read_text())['crop_size'] == [64, 64]
    assert '1 worker(s):' in capsys.readouterr().out


@pytest.mark.slow
def test_side_by_side_with_stock_mmsegmentation(tiny_data, tmp_path):
    """The GPU speed comparison's harness, on the CPU: both runs happen and the table is written."""
    from tools.bench import vs_stock
    code = vs_stock.main(['--data-root', tiny_data, '--scripts', 'segformer', '--batches', '1', '--iters', '3',
                          '--warmup', '1', '--out', str(tmp_path / 'out'), '--work', str(tmp_path / 'work'),
                          '--', '--num-workers', '0'])
    row = json.loads((tmp_path / 'out' / 'vs_stock.json').read_text())['rows'][0]
    assert code == 0, row
    assert row['config'] == 'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py' and row['batch_per_gpu'] == 1
    assert row['stock_img_per_sec'] > 0 and row['ours_img_per_sec'] > 0
    assert row['ratio'] == pytest.approx(row['ours_img_per_sec'] / row['stock_img_per_sec'], rel=0.01)
    assert row['precision'] == 'fp32'  # a CPU
    # the repository's baseline, in a process that trained with the packages' own code
    assert row['stock_cmd'].split()[0] == str(vs_stock.ROOT / 'tools' / 'bench' / 'stock_mmseg_train.py')
    assert row['stock_check']['stock'] is True and row['stock_check']['project_modules'] == []
    table = (tmp_path / 'out' / 'vs_stock.md').read_text()
    assert '| segformer | 1 |' in table and 'tools.bench.vs_stock' in table
