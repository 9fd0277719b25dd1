"""TRACKER (--tracker): a run's scalars, config and summary in TensorBoard, W&B (offline) and MLflow
(a file store), read back from what each tracker wrote and compared with the run's own scalars.json
and summary.json; a missing tracker package or an unknown name stops the run first (exit 2)."""
import json
import os
import struct
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY, load_script

RUN = ['--backbone', 'r18-d8', '--max-iters', '2', '--val-interval', '2']


def refused(capsys, *flags):
    with pytest.raises(SystemExit) as stop:
        load_script('train_fcn').main(list(flags))
    return stop.value.code, capsys.readouterr().err


# ---------------------------------------------------------------- refused before anything is built

@pytest.mark.parametrize('value', ['comet', 'tensorboard,comet', 'wandb,wandb', 'none,wandb', 'tensorboard,'])
def test_an_unknown_or_contradictory_tracker_is_refused_with_the_choices(capsys, tmp_path, value):
    code, err = refused(capsys, *TINY, '--work-dir', str(tmp_path / 'w'), '--tracker', value)
    assert code == 2 and 'Traceback' not in err
    assert f"--tracker '{value}' (TRACKER): must be one or several of tensorboard, wandb, mlflow, comma-separated " \
           "(or 'none')" in err, err
    assert not (tmp_path / 'w').exists()


def test_a_tracker_whose_package_is_missing_stops_the_run_before_building(capsys, monkeypatch, tiny_data, tmp_path):
    """Not installed, as the import system sees it: a None entry in sys.modules fails `import wandb`."""
    monkeypatch.setitem(sys.modules, 'wandb', None)
    monkeypatch.setitem(sys.modules, 'mlflow', None)
    work = tmp_path / 'w'
    code, err = refused(capsys, '--data-root', tiny_data, '--work-dir', str(work), *TINY, *RUN,
                        '--tracker', 'tensorboard,wandb,mlflow')
    assert code == 2 and 'Traceback' not in err, err
    assert '--tracker tensorboard,wandb,mlflow (TRACKER): cannot import wandb (' in err and '; mlflow (' in err
    assert err.count('make trackers') == 1, 'one error, one fix for both'
    assert 'pip install --require-hashes --no-deps -r requirements/lock-trackers.txt' in err
    assert not work.exists(), 'nothing built or written'


# ---------------------------------------------------------------- the config each choice makes

def test_each_choice_makes_its_backends(monkeypatch):
    from common import trackers
    for name in ('WANDB_PROJECT', 'MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_NAME'):
        monkeypatch.delenv(name, raising=False)
    types = lambda value: [b['type'] for b in trackers.vis_backends(value, work_dir='work_dirs/fcn_ade20k',
                                                                     script='fcn', variant='r50-d8')]
    assert types('tensorboard') == ['LocalVisBackend', 'TensorboardVisBackend']  # as before TRACKER
    assert types('none') == ['LocalVisBackend']  # the text log and scalars.json stay
    assert types('wandb, MLflow') == ['LocalVisBackend', 'RunWandbVisBackend', 'RunMLflowVisBackend']
    _, wandb, mlflow = trackers.vis_backends('wandb,mlflow', work_dir='work_dirs/fcn_ade20k', script='fcn',
                                             variant='r50-d8')
    assert wandb['run_name'] == mlflow['run_name'] == 'fcn r50-d8'
    assert wandb['init_kwargs'] == dict(project='ade20k-segmentation', group='fcn_ade20k', job_type='train',
                                        tags=['fcn', 'r50-d8'])
    assert mlflow['exp_name'] == 'fcn_ade20k' and mlflow['tracking_uri'] is None  # WORK_DIR/mlruns
    monkeypatch.setenv('WANDB_PROJECT', 'mine')
    monkeypatch.setenv('MLFLOW_TRACKING_URI', 'http://127.0.0.1:5000')
    monkeypatch.setenv('MLFLOW_EXPERIMENT_NAME', 'segmentation')
    _, wandb, mlflow = trackers.vis_backends('wandb,mlflow', work_dir='w', script='fcn')
    assert 'project' not in wandb['init_kwargs'], 'WANDB_PROJECT decides (an init argument would win over it)'
    assert mlflow['tracking_uri'] == 'http://127.0.0.1:5000' and mlflow['exp_name'] == 'segmentation'


def test_wandb_is_online_only_with_a_login(tmp_path):
    from common import trackers
    netrc = tmp_path / 'netrc'
    netrc.write_text('machine example.org login a password b\n')
    assert not trackers.wandb_login_found({'NETRC': str(netrc)})
    assert trackers.wandb_login_found({'NETRC': str(netrc), 'WANDB_API_KEY': 'x' * 40})
    netrc.write_text('machine api.wandb.ai\n  login user\n  password ' + 'x' * 40 + '\n')  # what `wandb login` writes
    assert trackers.wandb_login_found({'NETRC': str(netrc)})
    assert not trackers.wandb_login_found({'NETRC': str(netrc), 'WANDB_BASE_URL': 'https://wandb.example.org'})
    assert not trackers.wandb_login_found({'NETRC': str(tmp_path / 'absent')})


def test_mlflow_file_store_is_asked_for_only_while_a_run_lasts(monkeypatch):
    from common import trackers
    monkeypatch.delenv('MLFLOW_ALLOW_FILE_STORE', raising=False)
    file_store = dict(visualizer=dict(vis_backends=[dict(type='RunMLflowVisBackend', tracking_uri=None)]))
    server = dict(visualizer=dict(vis_backends=[dict(type='RunMLflowVisBackend', tracking_uri='http://h:5000')]))
    with trackers.mlflow_file_store(file_store):
        assert os.environ['MLFLOW_ALLOW_FILE_STORE'] == 'true'
    assert 'MLFLOW_ALLOW_FILE_STORE' not in os.environ
    with trackers.mlflow_file_store(server):
        assert 'MLFLOW_ALLOW_FILE_STORE' not in os.environ
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'false')  # the user's word stands
    with trackers.mlflow_file_store(file_store):
        assert os.environ['MLFLOW_ALLOW_FILE_STORE'] == 'false'
    assert os.environ['MLFLOW_ALLOW_FILE_STORE'] == 'false'


def test_summary_numbers_are_flattened_under_summary():
    from common import trackers
    assert trackers.flat_summary(dict(mIoU=41.2, status='finished', speed=dict(precision='bf16'), max_mem_mb=None)) \
        == {'summary/mIoU': 41.2, 'summary/status': 'finished', 'summary/speed/precision': 'bf16'}
    assert [trackers.outcome(s) for s in ('finished', 'interrupted: SIGTERM at iteration 3', 'diverged: nan', None)] \
        == ['finished', 'killed', 'failed', 'failed']


def test_a_dumped_config_with_trackers_imports_their_backends(tmp_path):
    from mmengine.config import Config
    path = tmp_path / 'fcn.py'
    load_script('train_fcn').main(['--dump-config', str(path), '--tracker', 'wandb,mlflow'])
    cfg = Config.fromfile(str(path))  # imports its custom_imports, as MMSegmentation's tools do
    assert 'common.trackers' in cfg.custom_imports['imports']
    from mmengine.registry import VISBACKENDS
    assert VISBACKENDS.get('RunWandbVisBackend') and VISBACKENDS.get('RunMLflowVisBackend')


# ---------------------------------------------------------------- the extra's lock

def test_the_trackers_lock_moves_nothing_of_the_stack_and_is_what_is_installed():
    from importlib.metadata import version

    from tools.setup import make_lock
    stack = make_lock.pins((ROOT / 'requirements/lock.txt').read_text())
    text = (ROOT / 'requirements/lock-trackers.txt').read_text()
    extra = make_lock.pins(text)
    assert {'wandb', 'mlflow-skinny'} <= set(extra) and not set(extra) & set(stack)
    pins = [line for line in text.splitlines() if line and not line.startswith(('#', ' '))]
    assert len(pins) == len(extra) == text.count('--hash=sha256:') and all(' \\' in line for line in pins)
    assert version('wandb') == extra['wandb'] and version('mlflow-skinny') == extra['mlflow-skinny'], \
        'run `make trackers`'


def test_make_lock_trackers_resolves_against_the_stacks_versions(tmp_path, monkeypatch):
    """What `make_lock --trackers` asks pip for and writes (pip's answer stood in for)."""
    from tools.setup import make_lock
    (tmp_path / 'requirements').mkdir()
    (tmp_path / 'requirements/lock.txt').write_text('protobuf==7.0 \\\n    --hash=sha256:' + '0' * 64 + '\n')
    (tmp_path / 'requirements/trackers.in').write_text('# comment\nwandb\n')
    monkeypatch.setattr(make_lock, 'ROOT', tmp_path)
    monkeypatch.setattr(make_lock, 'TRACKERS', tmp_path / 'requirements/trackers.in')
    monkeypatch.setattr(make_lock, 'TRACKERS_LOCK', tmp_path / 'requirements/lock-trackers.txt')
    asked, answer = [], {'protobuf': '7.0'}

    def resolve(requirements, no_deps, index_args=(), constraints=()):
        asked.append((requirements, no_deps, list(constraints)))
        return [dict(metadata=dict(name=n, version=v), download_info=dict(archive_info=dict(hashes=dict(sha256='1' * 64))))
                for n, v in dict(wandb='1.0', **answer).items()]

    monkeypatch.setattr(make_lock, 'resolve', resolve)
    make_lock.main(['--trackers'])
    assert asked == [(['wandb'], False, ['protobuf==7.0'])]
    lock = (tmp_path / 'requirements/lock-trackers.txt').read_text()
    assert 'wandb==1.0 \\\n    --hash=sha256:' in lock and 'protobuf' not in lock.split('Do not edit.')[1]
    answer['protobuf'] = '6.0'  # a resolution that would move the stack is refused, nothing written
    (tmp_path / 'requirements/lock-trackers.txt').unlink()
    with pytest.raises(SystemExit, match='would move the stack'):
        make_lock.main(['--trackers'])
    assert not (tmp_path / 'requirements/lock-trackers.txt').exists()


# ---------------------------------------------------------------- a run, read back from each tracker

def wandb_records(path):
    """The records of a W&B offline run file (run-<id>.wandb): W&B's header (':W&B', magic, version),
    then LevelDB's log format: 32 KiB blocks of chunks (crc32, length, type: full/first/middle/last),
    each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2
    data, block, pos, record = Path(path).read_bytes(), 32768, 7, b''
    assert data[:4] == b':W&B'
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        record = chunk if kind in (1, 2) else record + chunk
        if kind in (1, 4):
            parsed = wandb_internal_pb2.Record()
            parsed.ParseFromString(record)
            yield parsed


def key_of(item):
    return item.key or '/'.join(item.nested_key)  # W&B keeps a key in one or the other


def wandb_run(work):
    """{'run': the run record, 'config': keys, 'history': rows, 'summary': last values, 'exit': code}."""
    [path] = Path(work).glob('*/vis_data/wandb/offline-run-*/run-*.wandb')
    found = dict(config=set(), history=[], summary={}, exit=None, artifacts={})
    for record in wandb_records(path):
        kind = record.WhichOneof('record_type')
        if kind == 'run':
            found['run'] = record.run
        elif kind == 'config':
            found['config'] |= {item.key for item in record.config.update}
        elif kind == 'history':
            row = {key_of(item): json.loads(item.value_json) for item in record.history.item}
            found['history'].append({k: v for k, v in row.items() if not k.startswith('_')})  # W&B's own: _step...
        elif kind == 'summary':
            found['summary'].update({key_of(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == 'exit':
            found['exit'] = record.exit.exit_code
        elif kind == 'artifact':
            found['artifacts'][(record.artifact.type, record.artifact.name)] = \
                {entry.path for entry in record.artifact.manifest.contents}
    return found


def mlflow_run(work):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f'file:{Path(work).absolute() / "mlruns"}')
    [run] = client.search_runs([client.get_experiment_by_name(Path(work).name).experiment_id])
    history = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
               for key in run.data.metrics}
    artifacts = set()
    todo = [None]
    while todo:
        for item in client.list_artifacts(run.info.run_id, todo.pop()):
            (todo.append(item.path) if item.is_dir else artifacts.add(item.path))
    return run, history, artifacts


def scalar_rows(work):
    [path] = Path(work).glob('*/vis_data/scalars.json')
    return path.parent.parent.name, [json.loads(line) for line in path.read_text().splitlines()]


def same_rows(found, expected):
    """Rows of the same keys, in the same order, with the same values (to float precision)."""
    return len(found) == len(expected) and all(
        a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-12) for k in b) for a, b in zip(found, expected))


def isolate_wandb(monkeypatch, tmp_path):
    """No W&B login and no W&B folders of the user's: the run decides offline by itself."""
    for name in ('WANDB_MODE', 'WANDB_API_KEY', 'WANDB_IDENTITY_TOKEN_FILE', 'WANDB_BASE_URL', 'WANDB_PROJECT',
                 'MLFLOW_TRACKING_URI', 'MLFLOW_EXPERIMENT_NAME', 'MLFLOW_ALLOW_FILE_STORE'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'no-netrc'))
    for name in ('WANDB_CONFIG_DIR', 'WANDB_CACHE_DIR', 'WANDB_DATA_DIR'):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


@pytest.mark.slow
def test_every_tracker_gets_the_runs_scalars_config_and_summary(tiny_data, tmp_path, monkeypatch, capsys):
    isolate_wandb(monkeypatch, tmp_path)
    work = tmp_path / 'fcn_tiny'
    load_script('train_fcn').main(['--data-root', tiny_data, '--work-dir', str(work), *TINY, *RUN,
                                   '--tracker', 'tensorboard,wandb,mlflow'])
    assert 'MLFLOW_ALLOW_FILE_STORE' not in os.environ, 'asked for while the run lasted only'
    assert 'W&B: offline (no WANDB_MODE and no W&B login)' in capsys.readouterr().out
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['mIoU'] is not None
    launch, rows = scalar_rows(work)
    assert [row['step'] for row in rows] == [1, 2, 2] and 'mIoU' in rows[-1]  # 2 training rows, 1 evaluation
    name = f'fcn r18-d8 {launch}'

    # W&B: the run's name and group, the config, every row of scalars.json, the summary, finished.
    wandb = wandb_run(work)
    assert (wandb['run'].display_name, wandb['run'].run_group, list(wandb['run'].tags)) == \
        (name, 'fcn_tiny', ['fcn', 'r18-d8'])
    assert {'model', 'train_dataloader', 'optim_wrapper', 'param_scheduler'} <= wandb['config']
    assert same_rows(wandb['history'], rows), (wandb['history'], rows)
    assert all(wandb['summary'][f'summary/{key}'] == pytest.approx(summary[key])
               for key in ('mIoU', 'best_mIoU', 'sec_per_iter', 'img_per_sec', 'iters_done', 'status', 'model'))
    assert wandb['summary']['summary/speed/precision'] == summary['speed']['precision']
    assert wandb['exit'] == 0, 'finished (wandb.finish), after the summary'
    code = wandb['artifacts'][('source', 'source-train_fcn')]
    assert code == {'train_fcn.py', *(p.relative_to(ROOT).as_posix() for p in (ROOT / 'common').rglob('*.py'))}

    # MLflow: the same, in the file store in WORK_DIR/mlruns.
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')  # for this client reading it
    run, history, artifacts = mlflow_run(work)
    assert run.info.run_name == name and run.info.status == 'FINISHED'
    assert run.data.tags['script'] == 'fcn' and run.data.tags['summary/status'] == 'finished'
    assert run.data.params['model.backbone.depth'] == '18'
    for key in {k for row in rows for k in row} - {'step'}:
        expected = sorted((row['step'], row[key]) for row in rows if key in row)
        assert [s for s, _ in history[key]] == [s for s, _ in expected], key
        assert [v for _, v in history[key]] == pytest.approx([v for _, v in expected], rel=1e-12), key
    assert all(run.data.metrics[f'summary/{key}'] == pytest.approx(summary[key])
               for key in ('mIoU', 'best_mIoU', 'sec_per_iter', 'img_per_sec', 'iters_done'))
    assert {'summary.json', f'{launch}.log', 'vis_data/scalars.json', 'vis_data/config.py'} <= artifacts
    assert not [a for a in artifacts if 'wandb' in a or 'mlruns' in a]

    # TensorBoard: the same tags.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    [events] = (work / launch / 'vis_data').glob('events.out.tfevents.*')
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert set(accumulator.Tags()['scalars']) == {k for row in rows for k in row} - {'step'}


@pytest.mark.slow
def test_a_run_that_fails_still_records_its_summary_and_ends_its_runs_failed(tiny_data, tmp_path, monkeypatch):
    """A NaN loss at the first iteration (exit 3; the project's own fault injection, set as
    ADE_TRAIN_FAULT=nan@iter=1 would): both runs get summary.json's status and are ended failed."""
    from common import faults
    isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.setattr(faults, 'FAULTS', faults._parse({'ADE_TRAIN_FAULT': 'nan@iter=1'}))
    monkeypatch.setattr(faults, '_counters', {})
    work = tmp_path / 'fcn_nan'
    with pytest.raises(SystemExit) as stop:
        load_script('train_fcn').main(['--data-root', tiny_data, '--work-dir', str(work), *TINY, *RUN,
                                       '--tracker', 'wandb,mlflow'])
    assert stop.value.code == 3
    status = json.loads((work / 'summary.json').read_text())['status']
    assert status.startswith('diverged')
    wandb = wandb_run(work)
    assert wandb['summary']['summary/status'] == status and wandb['exit'] == 1
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    run, _, artifacts = mlflow_run(work)
    assert run.info.status == 'FAILED' and run.data.tags['summary/status'] == status and 'summary.json' in artifacts


@pytest.mark.slow
def test_a_wandb_run_that_cannot_start_online_stops_with_what_to_do(capsys, tiny_data, tmp_path, monkeypatch):
    """WANDB_MODE=online without a login: W&B refuses at the Runner's start, before the model is
    built; one error saying what to do, exit 2."""
    isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.setenv('WANDB_MODE', 'online')
    code, err = refused(capsys, '--data-root', tiny_data, '--work-dir', str(tmp_path / 'w'), *TINY, *RUN,
                        '--tracker', 'wandb')
    assert code == 2 and 'Traceback' not in err, err
    assert 'W&B could not start the run: UsageError: No API key configured' in err and 'WANDB_MODE=offline' in err
