"""Every train_*.py: imports, dumps a loadable config, matches its official recipe, trains two
iterations plus an evaluation on the CPU with the GPU's default settings (bf16 autocast,
channels_last, the fused optimizer step, evaluation in batches of 8 over images of two sizes),
writes summary.json, and resumes from its checkpoint with the CPU's (fp32, NCHW)."""
import json
import math
import os
from pathlib import Path

import pytest

from conftest import GPU_SETTINGS, SCRIPTS, TINY, load_script
from hostreads import MATCHER_SCRIPTS, HostReads
from kernelwatch import KernelWatch

MATCHER_READS = {}

CORE = ['train_fcn', 'train_pspnet', 'train_deeplabv3plus', 'train_upernet', 'train_segformer', 'train_mask2former']


def test_the_core_scripts_exist():
    assert set(CORE) <= set(SCRIPTS)


@pytest.mark.parametrize('name', SCRIPTS)
def test_imports_without_side_effects(name):
    module = load_script(name)
    assert callable(module.build_config) and callable(module.main)
    assert module.REFERENCE['config'].endswith('.py')
    for setting in ('DATA_ROOT', 'WORK_DIR', 'CROP_SIZE', 'BATCH_PER_GPU', 'MAX_ITERS', 'VAL_INTERVAL', 'LR',
                    'PRECISION', 'SEED'):
        assert hasattr(module, setting), f'{name} lacks the core setting {setting}'
    assert module.BATCH_PER_GPU == 2 and module.VAL_INTERVAL == 4000
    # The default recipe's crop: 512, unless its REFERENCE says another (BEiT's recipes train at 640 only).
    assert tuple(module.CROP_SIZE) == tuple(module.REFERENCE.get('crop_size', (512, 512)))
    # The layout the user's setup notes promise: work_dirs/{model_name}_ade20k/.
    assert module.WORK_DIR == f"work_dirs/{name.removeprefix('train_')}_ade20k"


@pytest.mark.parametrize('name', SCRIPTS)
def test_dump_config_loads_and_flags_move_derived_numbers(name, tmp_path):
    from mmengine.config import Config
    module = load_script(name)
    path = tmp_path / 'cfg.py'
    module.main(['--dump-config', str(path), '--max-iters', '200', '--val-interval', '50'])
    cfg = Config.fromfile(str(path))
    assert cfg.train_cfg.max_iters == 200 and cfg.train_cfg.val_interval == 50
    assert cfg.param_scheduler[-1]['end'] == 200, 'the scheduler end must follow --max-iters'
    assert cfg.default_hooks.checkpoint.interval == 50
    heads = cfg.model.decode_head if isinstance(cfg.model.decode_head, list) else [cfg.model.decode_head]
    # K-Net keeps its classes in the kernel generator; cascades (OCRNet, PointRend) have a list of heads.
    classes = [h.get('num_classes', h.get('kernel_generate_head', {}).get('num_classes')) for h in heads]
    assert classes == [150] * len(heads)


@pytest.mark.slow
@pytest.mark.parametrize('name', SCRIPTS)
def test_train_two_iterations_evaluate_and_resume(name, mixed_data, tmp_path, capsys):
    module = load_script(name)
    work = tmp_path / 'work'
    # SMOKE_TEST_FLAGS: a script whose default is too large for a CPU test (ViT-L...) names a reduced
    # width here; its full parameter count is still checked against the recipe in test_recipes.py.
    args = ['--data-root', mixed_data, '--work-dir', str(work), *TINY, '--val-interval', '2',
            *getattr(module, 'SMOKE_TEST_FLAGS', [])]
    # From scratch with what a GPU run turns on by default: bf16, NHWC, the fused step, eval batch 8.
    with KernelWatch() as watch:
        module.main(args + GPU_SETTINGS + ['--max-iters', '2'])
    assert not watch.problems, f'{name}: mmcv compiled ops fed what their kernels cannot take:\n' + \
        '\n'.join(sorted(set(watch.problems)))
    if name in ('train_psanet', 'train_mask2former'):  # PSAMask; deformable attention (PyTorch code on a CPU)
        assert watch.guarded_calls, f'{name} reaches a compiled mmcv op: the watch must have seen it'
    first = json.loads((work / 'summary.json').read_text())
    assert first['status'] == 'finished'
    assert first['precision'] == 'bf16' and first['speed']['channels_last'] and first['speed']['fused_optimizer']
    assert first['iters_done'] == 2 and first['max_iters'] == 2
    assert 0 <= first['mIoU'] <= 100 and 0 <= first['aAcc'] <= 100
    assert first['sec_per_iter'] > 0 and first['img_per_sec'] > 0
    assert first['world_size'] == 1 and first['batch_per_gpu'] == 2
    assert (work / 'iter_2.pth').is_file() and (work / 'predictions.png').is_file()
    assert first['start_iter'] == 0
    losses = [json.loads(line)['loss'] for path in work.glob('*/vis_data/scalars.json')
              for line in path.read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses

    # Same command, longer schedule, the CPU's fp32 and NCHW: continues from iter 2 instead of
    # starting over, its optimizer state written with NHWC strides (fused step: the loss guard reads
    # no host). Iteration 3 does not log (--log-interval 2): the host must not wait for the device in it.
    args += ['--fused-optimizer', 'on']
    with HostReads(iteration=3, script=name) as reads:
        module.main(args + ['--max-iters', '4', '--log-interval', '2'])
    second = json.loads((work / 'summary.json').read_text())
    assert second['start_iter'] == 2 and second['iters_done'] == 4 and second['precision'] == 'fp32'
    assert 'resuming from' in capsys.readouterr().out
    logged_steps = {json.loads(line).get('step') for path in work.glob('*/vis_data/scalars.json')
                    for line in path.read_text().splitlines()}
    assert {1, 2, 4} <= logged_steps
    assert reads.counted, 'iteration 3 must have run under the counter'
    assert not reads.outside_matcher(), f'{name}: host reads in a training iteration that does not log:\n' + \
        reads.report()
    if name in MATCHER_SCRIPTS:  # a matcher or OHEM reads the host by its nature: counted, said
        assert reads.in_matcher(), f'{name}: its matcher (or OHEM) reads the host'
        MATCHER_READS[name] = len(reads.in_matcher())

    # The same command once more: already finished, results kept.
    module.main(args + ['--max-iters', '4'])
    assert 'already finished' in capsys.readouterr().out
    assert json.loads((work / 'summary.json').read_text()) == second
