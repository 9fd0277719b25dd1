"""What a GPU run does differently from the suite's CPU runs, proven on the CPU: mmcv's compiled ops
under bf16 and channels_last (PSANet's PSAMask), mmseg code that needs NCHW (DMNet), fp16 with its
loss scaler and a first step that overflows, resuming across memory layouts, and what the banner says
of batch normalisation on one GPU. (Every script under bf16 + channels_last + the fused step +
evaluation batch 8: tests/test_scripts.py.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, load_script
from common import cli, config, kernel_guard, resume, train
from kernelwatch import KernelWatch


def build_model(name, *flags):
    """The script's model at the tests' size, as a CPU run builds it (BN for SyncBN), in fp32 NCHW."""
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    module = load_script(name)
    s = cli.parse(vars(module), [*TINY, *flags])
    cfg = config.sync_bn_to_bn(module.build_config(s))
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    return MODELS.build(ConfigDict(cfg['model']))


def head_output(model, features, channels_last):
    """The decode head's logits for `features`, with the weights and inputs in one layout."""
    head = model.decode_head
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    head.to(memory_format=fmt)
    kernel_guard.guard_kernels(head)  # what every run does to its model (after the layout change)
    with torch.no_grad():
        return head([f.to(memory_format=fmt) for f in features])


def backbone_features(model, batch=2, size=64):
    torch.manual_seed(1)
    with torch.no_grad():
        return [f.contiguous() for f in model.backbone(torch.randn(batch, 3, size, size))]


@pytest.mark.slow
def test_psanet_head_gives_the_same_output_in_both_layouts_and_runs_in_bf16():
    """PSAMask's kernels index raw NCHW memory and dispatch on float/double only: with an NHWC input
    the attention would be silently wrong on a GPU (on a CPU it stops), and bf16 stops at iteration 1."""
    model = build_model('train_psanet').eval()
    features = backbone_features(model)
    nchw = head_output(model, features, channels_last=False)
    nhwc = head_output(build_model('train_psanet').eval(), features, channels_last=True)
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)
    with torch.autocast('cpu', dtype=torch.bfloat16), KernelWatch() as watch:
        mixed = head_output(build_model('train_psanet').eval(), features, channels_last=True)
    assert not watch.problems and watch.kernel_calls > 0
    assert (mixed.float() - nchw).abs().max() < 0.05 * nchw.abs().max()


@pytest.mark.slow
def test_dmnet_head_runs_channels_last_at_batch_2():
    """mmseg's DCM does x.view(1, b*c, h, w) on a convolution output: not a view of an NHWC tensor."""
    model = build_model('train_dmnet').eval()
    features = backbone_features(model)
    nchw = head_output(model, features, channels_last=False)
    nhwc = head_output(build_model('train_dmnet').eval(), features, channels_last=True)
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)


def test_the_watch_sees_a_compiled_op_fed_without_the_guard():
    """The check behind tests/test_scripts.py: an unguarded PSAMask given NHWC or bf16 input is named."""
    from mmcv.ops import PSAMask
    op = PSAMask('collect', (3, 3))
    x = torch.randn(2, 9, 6, 6).to(memory_format=torch.channels_last)
    with KernelWatch() as watch:
        try:
            op(x)
        except RuntimeError:
            pass  # the CPU kernel may refuse it: what matters is that the watch named it
    assert any('without the kernel guard' in p for p in watch.problems)
    assert any('non-contiguous input' in p for p in watch.problems)
    with KernelWatch() as watch:
        try:
            op(x.bfloat16())
        except RuntimeError:
            pass
    assert any('torch.bfloat16 input' in p for p in watch.problems)
    kernel_guard.guard_kernels(op)
    with KernelWatch() as watch, torch.autocast('cpu', dtype=torch.bfloat16):
        out = op(x.bfloat16())
    assert not watch.problems and out.dtype == torch.float32 and out.is_contiguous()


def test_group_norm_gets_nchw_input_on_a_cpu():
    """torch 2.13's CPU group_norm backward crashes (segfault) on a channels_last input that needs no
    gradient, as PoolFormer's first norm after its frozen patch embedding: on a CPU the guard feeds
    GroupNorm contiguous inputs (in a process of its own: a crash must not take the suite down)."""
    code = ('import torch; from common import kernel_guard; m = torch.nn.GroupNorm(1, 64); '
            'assert kernel_guard.guard_kernels(m) == [""]; '
            'x = torch.randn(2, 64, 8, 8).to(memory_format=torch.channels_last); m(x).sum().backward(); print("ok")')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'ok' in proc.stdout, (proc.returncode, proc.stderr[-2000:])


# ---------------------------------------------------------------- whole runs

# Uninitialised memory (torch.empty) reads as NaN here, so a step that leaves empty_like buffers as
# optimizer state shows itself every time instead of when the allocator happens to return garbage.
DETERMINISTIC_RUN = ('import runpy, sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); '
                     'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')


def run(script, work, data, *flags, fault=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith('ADE_TRAIN_FAULT')}
    if fault:
        env['ADE_TRAIN_FAULT'] = fault
    cmd = [sys.executable, '-c', DETERMINISTIC_RUN, script, '--data-root', data, '--work-dir', str(work), *TINY,
           *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def losses(work):
    found = {}
    for path in sorted(Path(work).glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                found[record['step']] = record['loss']
    return found


# SGD with momentum; AdamW (SegFormer's tiny random model overflows by itself a few times more: 6 iterations)
@pytest.mark.slow
@pytest.mark.parametrize('script, iters', [('train_fcn.py', 3), ('train_segformer.py', 6)])
def test_fp16_with_the_fused_step_survives_an_overflow_on_the_first_step(script, iters, tiny_data, tmp_path):
    """fp16 (GPUs without bf16): the loss scaler skips a step whose gradients overflow, routine on the
    first steps at the initial scale 2^16. Torch's fused SGD makes its momentum with empty_like before
    the kernel learns of the overflow: that memory must not become the momentum (NaN losses after)."""
    work = tmp_path / 'fp16'
    proc = run(script, work, tiny_data, '--precision', 'fp16', '--channels-last', 'on', '--fused-optimizer', 'on',
               '--max-iters', str(iters), '--val-interval', str(iters), fault='overflow@iter=1')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['precision'] == 'fp16' and summary['mIoU'] is not None
    logged = losses(work)
    assert sorted(logged) == list(range(1, iters + 1)) and all(v == v and abs(v) < 1e4 for v in logged.values()), logged
    checkpoint = torch.load(work / f'iter_{iters}.pth', map_location='cpu', weights_only=False)
    assert checkpoint['optimizer']['loss_scaler']['scale'] <= 2.0 ** 15, 'the first step overflowed: scale halved'
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values() if v.is_floating_point())
    state = [t for per_param in checkpoint['optimizer']['state'].values() for t in per_param.values()
             if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert state, 'no step was taken after the overflow'
    assert all(torch.isfinite(t).all() for t in state)


@pytest.mark.slow
@pytest.mark.parametrize('script', ['train_fcn.py', 'train_segformer.py'])
def test_a_checkpoint_of_an_nchw_run_resumes_with_channels_last_and_the_fused_step(script, tiny_data, tmp_path):
    """A CPU run's (or --channels-last off) checkpoint, resumed with a GPU's defaults: the optimizer
    state loads with NCHW strides while parameters and gradients are NHWC; the fused kernels refuse that."""
    work = tmp_path / 'work'
    first = run(script, work, tiny_data, '--max-iters', '2', '--val-interval', '2')
    assert first.returncode == 0, first.stderr[-3000:]
    second = run(script, work, tiny_data, '--precision', 'bf16', '--channels-last', 'on', '--fused-optimizer', 'on',
                 '--max-iters', '4', '--val-interval', '2')
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['start_iter'] == 2 and summary['speed']['channels_last']
    assert any('optimizer state tensors given their parameters\' memory layout' in log.read_text()
               for log in work.glob('*/*.log'))  # the run's log file (not the console: common/console.py)
    assert all(v == v for v in losses(work).values())
    # The state the resumed run stepped (and saved) is NHWC like its parameters: CUDA's fused kernels
    # refuse a mix (a CPU's take it, so the layout itself is what is checked here).
    state = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)['optimizer']['state']
    four_d = [t for per_param in state.values() for t in per_param.values() if isinstance(t, torch.Tensor) and t.dim() == 4]
    assert four_d and all(t.is_contiguous(memory_format=torch.channels_last) for t in four_d)


def test_optimizer_state_takes_its_parameters_layout():
    conv = torch.nn.Conv2d(3, 8, 3)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    conv.to(memory_format=torch.channels_last)
    fresh = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, fused=True)
    fresh.load_state_dict(state)
    buffer = fresh.state[conv.weight]['momentum_buffer']
    assert buffer.stride() != conv.weight.stride()
    assert resume.match_state_layouts(fresh) == 1
    moved = fresh.state[conv.weight]['momentum_buffer']
    assert moved.stride() == conv.weight.stride() and torch.equal(moved, buffer)
    conv(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)).sum().backward()
    fresh.step()  # the fused kernel takes it


@pytest.mark.slow
def test_psanet_eval_only_agrees_with_its_channels_last_training_run(tiny_data, tmp_path, capsys):
    """The training run's evaluation (NHWC weights and inputs) and --eval-only of its checkpoint (NCHW)
    score the same: PSAMask reads what it is given the same way in both."""
    module = load_script('train_psanet')
    work = tmp_path / 'work'
    flags = ['--data-root', tiny_data, '--work-dir', str(work), *TINY, '--precision', 'fp32']
    module.main(flags + ['--channels-last', 'on', '--max-iters', '2', '--val-interval', '2'])
    trained = json.loads((work / 'summary.json').read_text())
    module.main(flags + ['--eval-only', str(work / 'iter_2.pth'), '--out', str(tmp_path / 'eval')])
    evaluated = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert evaluated['mIoU'] == pytest.approx(trained['mIoU'], abs=1e-6)
    assert evaluated['aAcc'] == pytest.approx(trained['aAcc'], abs=1e-6)


# ---------------------------------------------------------------- what the banner says

def test_the_banner_says_what_bn_normalises_over_on_one_gpu():
    module = load_script('train_pspnet')
    s = cli.parse(vars(module), [])
    one = train.banner(s, world=1, sync_bn=True, cuda=True)
    assert "SyncBN normalises over 16 images; here each process normalises alone, over 2 image(s)" in one
    assert '--batch-per-gpu 8 --accumulate 2' in one
    assert 'BN:' not in train.banner(s, world=8, sync_bn=True, cuda=True)  # real SyncBN
    assert 'BN:' not in train.banner(s, world=1, sync_bn=False, cuda=True)  # a recipe without SyncBN
