"""MMSegmentation's own tools (the wheel's tools/train.py, tools/test.py, mmseg.apis) run a config that
--dump-config wrote, on our checkpoints and theirs, with torch's safe loading on; a checkpoint they
wrote scores with our --eval-only what their tools/test.py gives. The tools run as the user types them
(docs/stock_tools.md): subprocesses from the repository root with PYTHONPATH=. on tiny data."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY, load_script


def tools_dir():
    import mmseg
    return Path(mmseg.__file__).parent / '.mim' / 'tools'


def env():
    """The user's environment: torch's safe loading on (its default), the repository importable."""
    found = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    found['PYTHONPATH'] = '.'
    return found


def stock(tool, *args):
    proc = subprocess.run([sys.executable, str(tools_dir() / tool), *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def per_class(log):
    """[(IoU, Acc), ...] of the 150 classes from the last per-class table IoUMetric logged (nan: undefined)."""
    lines = log.splitlines()
    head = max(i for i, line in enumerate(lines) if line.replace(' ', '') == '|Class|IoU|Acc|')
    rows = [line.split('|')[2:4] for line in lines[head + 2:head + 152]]
    return [tuple(float(v) for v in row) for row in rows]


def same(a, b):
    return all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=0.01)
               for pair_a, pair_b in zip(a, b, strict=True) for x, y in zip(pair_a, pair_b))


def stock_metrics(work_dir):
    """aAcc, mIoU, mAcc that tools/test.py --work-dir wrote (WORK_DIR/<time>/<time>.json)."""
    (path,) = Path(work_dir).glob('*/*.json')
    return {k: v for k, v in json.loads(path.read_text()).items() if k in ('aAcc', 'mIoU', 'mAcc')}


@pytest.fixture(scope='module')
def dumped(tiny_data, tmp_path_factory):
    """The config a user dumps with a GPU run's speed settings: 4 iterations, evaluated every 2."""
    out = tmp_path_factory.mktemp('dump')
    cmd = [sys.executable, 'train_fcn.py', *TINY, '--max-iters', '4', '--val-interval', '2',
           '--data-root', tiny_data, '--work-dir', str(out / 'unused'), '--precision', 'bf16', '--channels-last', 'on',
           '--dump-config', str(out / 'fcn_tiny.py')]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / 'fcn_tiny.py', proc.stdout


@pytest.fixture(scope='module')
def stock_run(dumped, tmp_path_factory):
    """tools/train.py: 2 iterations (the file says 4: an interrupted run), then --resume to the end."""
    work = tmp_path_factory.mktemp('stock_work')
    stock('train.py', dumped[0], '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=2')
    first = set(work.glob('*/vis_data/scalars.json'))
    resumed = stock('train.py', dumped[0], '--work-dir', work, '--resume')
    (second,) = set(work.glob('*/vis_data/scalars.json')) - first
    return work, resumed, second


@pytest.fixture(scope='module')
def our_run(tiny_data, tmp_path_factory):
    """A checkpoint of ours: train_fcn.py, 2 iterations, evaluated at the end."""
    work = tmp_path_factory.mktemp('our_work')
    cmd = [sys.executable, 'train_fcn.py', *TINY, '--max-iters', '2', '--val-interval', '2',
           '--data-root', tiny_data, '--work-dir', str(work)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


def test_the_dump_names_what_the_tools_need_and_not_the_speed_settings(dumped):
    from mmengine.config import Config
    path, printed = dumped
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ['common.stock_tools']
    # The speed settings are a run's, not the file's: the tools train the recipe's fp32, and the user is told.
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'Autocast' not in path.read_text()
    assert 'bf16, channels_last' in printed and 'not written in the file' in printed
    assert cfg.test_pipeline == cfg.test_dataloader.dataset.pipeline  # what inference_model reads


def test_the_default_dump_still_builds_the_official_recipe(tmp_path, capsys):
    from mmengine.config import Config
    from tools.recipes import recipes
    module = load_script('train_fcn')
    module.main(['--dump-config', str(tmp_path / 'fcn.py')])
    recipe = next(r for r in recipes.listed() if r['config'] == module.REFERENCE['config'])
    assert recipes.compare(recipe, ours=Config.fromfile(str(tmp_path / 'fcn.py')).to_dict()) == ([], [])
    assert 'note' not in capsys.readouterr().out  # fp32 on a CPU: the file trains as the run would


def test_stock_train_trains_and_resumes_with_safe_loading(stock_run):
    import torch
    from common import checkpoints
    work, log, second = stock_run
    # The resumed launch continued at iteration 3: it loaded iter_2.pth (weights_only) instead of restarting.
    steps = [json.loads(line)['step'] for line in second.read_text().splitlines()
             if 'loss' in line]
    assert steps == [3, 4], log[-3000:]
    assert 'resumed epoch: 0, iter: 2' in log
    assert checkpoints.load(work / 'iter_4.pth')['meta']['iter'] == 4
    assert torch.load(work / 'iter_4.pth', weights_only=True)['meta']['iter'] == 4  # allow-list of this process


def test_stock_test_scores_our_checkpoint_as_our_run_did(dumped, our_run, tmp_path):
    log = stock('test.py', dumped[0], our_run / 'iter_2.pth', '--work-dir', tmp_path)
    summary = json.loads((our_run / 'summary.json').read_text())
    assert stock_metrics(tmp_path) == pytest.approx({k: summary[k] for k in ('aAcc', 'mIoU', 'mAcc')}, abs=0.01)
    (our_log,) = our_run.glob('*/*.log')
    assert same(per_class(log), per_class(our_log.read_text()))


def test_our_eval_only_scores_a_stock_checkpoint_as_stock_test_does(dumped, stock_run, tiny_data, tmp_path):
    work = stock_run[0]
    log = stock('test.py', dumped[0], work / 'iter_2.pth', '--work-dir', tmp_path / 'stock')
    load_script('train_fcn').main([*TINY, '--data-root', tiny_data, '--work-dir', str(tmp_path / 'w'),
                                   '--eval-only', str(work / 'iter_2.pth'), '--out', str(tmp_path / 'ours')])
    ours = json.loads((tmp_path / 'ours' / 'metrics.json').read_text())
    assert {k: ours[k] for k in ('aAcc', 'mIoU', 'mAcc')} == pytest.approx(stock_metrics(tmp_path / 'stock'), abs=0.01)
    with open(tmp_path / 'ours' / 'per_class.csv') as f:
        rows = [(float(r['IoU'] or 'nan'), float(r['Acc'] or 'nan')) for r in csv.DictReader(f)]
    assert same(rows, per_class(log))


INFERENCE = '''
import sys, numpy as np, torch
from mmseg.apis import inference_model, init_model
config, checkpoint, image, evil, out = sys.argv[1:]
model = init_model(config, checkpoint, device='cpu')
np.save(out, inference_model(model, image).pred_sem_seg.data[0].numpy())
print('classes', len(model.dataset_meta['classes']))
try:
    torch.load(evil)
except Exception as exc:
    print('refused', type(exc).__name__)
'''


class _RunsCode:
    def __reduce__(self):
        return (print, ('pickled code ran',))


def test_init_model_and_inference_model_on_our_checkpoint(dumped, our_run, tiny_data, tmp_path):
    import cv2
    import numpy as np
    import torch
    from mmengine.config import Config
    from common import checkpoints
    from common.infer.model import Logits, build
    torch.save({'payload': _RunsCode()}, tmp_path / 'evil.pth')
    image = sorted(Path(tiny_data, 'images', 'validation').glob('*.jpg'))[0]
    proc = subprocess.run([sys.executable, '-c', INFERENCE, str(dumped[0]), str(our_run / 'iter_2.pth'), str(image),
                           str(tmp_path / 'evil.pth'), str(tmp_path / 'pred.npy')],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Safe loading stayed on in that process: the allow-list admits mmengine's records, not code.
    assert 'classes 150' in proc.stdout and 'refused UnpicklingError' in proc.stdout
    assert 'pickled code ran' not in proc.stdout
    # The same prediction as our own model of that checkpoint (whole image, argmax of the logits).
    model = build(Config.fromfile(str(dumped[0])).to_dict()['model'], on='cpu',
                  state=checkpoints.state_dict(our_run / 'iter_2.pth', False, 'test'))
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        logits = Logits(model)(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())
    expected = logits.argmax(1)[0].numpy()
    predicted = np.load(tmp_path / 'pred.npy')
    assert predicted.shape == rgb.shape[:2] and (predicted == expected).all()
