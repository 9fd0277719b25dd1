"""Out of GPU memory in a training step: the step is redone in more passes, the total batch kept
(common/out_of_memory.py), with torch's out-of-memory error raised at a chosen iteration."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from common import faults
from conftest import TINY, load_script


# ---------------------------------------------------------------- the loop, on a model where passes add up exactly

def _toy_runner(work_dir, accumulate):
    """A real mmengine Runner with AdaptiveTrainLoop and the run's fp32 optimizer wrapper, on a model
    with neither batch normalisation nor dropout: a batch's gradient is then the sum of its parts'."""
    from mmengine.dataset import pseudo_collate
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from common import out_of_memory, resilience  # noqa: F401  registers the loop and GuardedOptimWrapper

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            x = torch.stack(inputs)
            y = self.head(self.conv(x).mean((2, 3))).squeeze(1)
            target = torch.stack(data_samples)
            return {'loss': ((y - target) ** 2).mean()}

    generator = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(3, 8, 8, generator=generator), data_samples=torch.randn((), generator=generator))
            for _ in range(64)]
    torch.manual_seed(0)
    return Runner(model=Net(), work_dir=str(work_dir),
                  train_dataloader=dict(dataset=data, batch_size=4, num_workers=0, collate_fn=pseudo_collate,
                                        sampler=dict(type='InfiniteSampler', shuffle=False)),
                  optim_wrapper=dict(type='GuardedOptimWrapper', accumulative_counts=accumulate,
                                     optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
                  train_cfg=dict(type='AdaptiveTrainLoop', max_iters=6 * accumulate), default_hooks=dict(logger=None),
                  randomness=dict(seed=0), log_level='WARNING')


@pytest.mark.parametrize('accumulate,at', [(1, 3), (2, 4)])
def test_a_step_redone_in_passes_trains_as_the_whole_batch(tmp_path, monkeypatch, accumulate, at):
    """accumulate 2, at 4: the second batch of an accumulation window fails; the window's first batch
    is redone too. The weights end as without the failure (to float rounding: the sums differ in order)."""
    whole = _toy_runner(tmp_path / 'whole', accumulate)
    whole.train()
    monkeypatch.setitem(faults.FAULTS, ('oom', 'iter'), at)  # passes of more than 1 image fail from `at` on
    split = _toy_runner(tmp_path / 'split', accumulate)
    split.train()
    assert split.train_loop.adaptations == [dict(iter=at, batch_per_gpu=2, accumulate=2 * accumulate),
                                            dict(iter=at, batch_per_gpu=1, accumulate=4 * accumulate)]
    assert split.train_loop.passes == 4 and split.iter == whole.iter == 6 * accumulate
    for (name, a), b in zip(whole.model.named_parameters(), split.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    moved = next(whole.model.parameters()) - _toy_runner(tmp_path / 'fresh', accumulate).model.conv.weight
    assert moved.abs().max() > 1e-3  # the comparison is about trained weights


# ---------------------------------------------------------------- a script's run

@pytest.mark.slow
def test_a_run_out_of_memory_goes_on_with_half_the_images_per_pass(tiny_data, tmp_path):
    """As a user runs it: the console, the log and summary.json say what happened and how to start so."""
    env = dict(**__import__('os').environ, ADE_TRAIN_FAULT='oom@iter=3')
    proc = subprocess.run([sys.executable, 'train_fcn.py', '--data-root', tiny_data, '--work-dir', str(tmp_path),
                           *TINY, '--backbone', 'r18-d8', '--max-iters', '4', '--val-interval', '2'],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['iters_done'] == 4 and summary['mIoU'] is not None
    assert summary['out_of_memory'] == [dict(iter=3, batch_per_gpu=1, accumulate=2)]
    said = [line for line in proc.stdout.splitlines() if line.startswith('[memory] out of GPU memory at iteration 3')]
    assert len(said) == 1 and '--batch-per-gpu 1 --accumulate 2' in said[0]
    assert said[0] in next(tmp_path.glob('*/*.log')).read_text()
    logged = [json.loads(line) for line in next(tmp_path.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    assert [r['step'] for r in logged if 'loss' in r] == [1, 2, 3, 4]  # no step lost
    assert (tmp_path / 'iter_4.pth').is_file()


@pytest.mark.slow
def test_when_one_image_does_not_fit_the_run_stops_with_what_lowers_memory(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(faults.FAULTS, ('oom_any', 'iter'), 2)
    with pytest.raises(SystemExit) as stop:
        load_script('fcn').main(['--data-root', tiny_data, '--work-dir', str(tmp_path), *TINY,
                                 '--backbone', 'r18-d8', '--max-iters', '4', '--val-interval', '1'])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert 'out of GPU memory at iteration 2' in err and 'even 1 image per GPU does not fit' in err
    assert '--activation-ckpt' in err and '--crop-size' in err
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['status'].startswith('failed: out of GPU memory') and summary['iters_done'] == 1
    assert summary['out_of_memory'] == [dict(iter=2, batch_per_gpu=1, accumulate=2)]
    assert (tmp_path / 'iter_1.pth').is_file()  # what was trained is kept


@pytest.mark.slow
def test_a_distributed_run_stops_with_the_flags_to_rerun(tiny_data, tmp_path):
    """One rank out of memory: the ranks cannot agree mid-step, so the run stops (torchrun ends the
    other rank) and says how to rerun with the same total batch."""
    env = dict(**__import__('os').environ, ADE_TRAIN_FAULT='oom@iter=2', ADE_TRAIN_FAULT_RANK='1')
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           'train_fcn.py', '--data-root', tiny_data, '--work-dir', str(tmp_path), *TINY,
                           '--backbone', 'r18-d8', '--max-iters', '4', '--val-interval', '1'],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert 'a distributed run cannot split its batches' in proc.stderr, proc.stderr[-3000:]
    assert '--batch-per-gpu 1 --accumulate 2' in proc.stderr
    assert (tmp_path / 'iter_1.pth').is_file()
