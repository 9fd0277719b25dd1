"""Ops the fast path cannot feed as they are: what they get instead, under any precision and layout.

mmcv's compiled kernels (PSANet's PSAMask, Mask2Former's deformable attention) dispatch on float and
double only and index raw NCHW memory, and autocast does not cast the inputs of their custom autograd
Functions: under bf16 they stop at iteration 1, and with channels_last inputs a GPU computes them
silently wrong. Some mmseg code reshapes with .view() in ways only NCHW allows (DMNet), and one torch
CPU kernel crashes on NHWC (GroupNorm's backward). guard_kernels is the one rule for all of them: forward
hooks on the run's own model (training, evaluation, --eval-only, the predictions picture), nothing of
torch, mmcv or mmseg replaced. tests/test_scripts.py fails when a script reaches such an op unguarded.
"""
import sys
from contextlib import ExitStack

import torch

# mmseg code that reshapes a convolution's output with .view() in a way only an NCHW-contiguous tensor
# allows: under channels_last it stops with "view size is not compatible with input tensor's size
# and stride". Such a module keeps NCHW weights and gets NCHW inputs.
NCHW_ONLY = {
    'mmseg.models.decode_heads.dm_head.DCM': 'x.view(1, b * c, h, w) of a convolution output (DMNet)',
}


# torch ops that crash on a CPU with an NHWC input: such a module gets contiguous inputs there (GPUs
# keep NHWC). torch 2.13's CPU group_norm backward segfaults on a channels_last input that needs no
# gradient, as PoolFormer's first norm after its frozen patch embedding is.
NCHW_ON_CPU = {
    'torch.nn.modules.normalization.GroupNorm': 'CPU group_norm backward segfaults on NHWC input (torch 2.13)',
}


def _qualname(module):
    return f'{type(module).__module__}.{type(module).__qualname__}'


def runs_compiled_kernel(module):
    """Whether `module` is an mmcv op whose forward may run one of mmcv's compiled kernels. mmcv loads
    them through ext_loader into the op's own module as `ext_module`; they dispatch on float and
    double only (PSAMask, deformable attention: no bf16, PSAMask no fp16) and index raw NCHW memory,
    and autocast does not cast the inputs of their custom autograd Functions."""
    name = type(module).__module__
    return name.startswith('mmcv.ops.') and hasattr(sys.modules.get(name), 'ext_module')


def guard_kernels(model):
    """The one rule for the ops above, on the model of a run (training, evaluation, --eval-only):
    every mmcv op with a compiled kernel runs with autocast off on fp32, contiguous (NCHW) inputs and
    weights, every NCHW_ONLY module on contiguous inputs and weights, and on a CPU every NCHW_ON_CPU
    module on contiguous inputs. Forward hooks on the model's own modules (nothing of torch, mmcv or
    mmseg is replaced), so any script that reaches such an op gets it; a no-op for a module guarded
    already. Returns the names of the guarded modules."""
    guarded = []
    on_cpu = not torch.cuda.is_available()
    for name, module in model.named_modules():
        kind = ('fp32' if runs_compiled_kernel(module) else 'nchw' if _qualname(module) in NCHW_ONLY
                else 'cpu' if on_cpu and _qualname(module) in NCHW_ON_CPU else None)
        if kind is None or getattr(module, 'kernel_guard', None):
            continue
        if kind != 'cpu':
            module.to(memory_format=torch.contiguous_format)
        module.kernel_guard = kind
        module._guard_regions = []
        module.register_forward_pre_hook(_enter_guard, with_kwargs=True)
        module.register_forward_hook(_leave_guard, always_call=True)
        guarded.append(name)
    return guarded


def _enter_guard(module, args, kwargs):
    fp32 = module.kernel_guard == 'fp32'
    region = ExitStack()
    if fp32:
        for device in ('cuda', 'cpu'):
            if torch.is_autocast_enabled(device):
                region.enter_context(torch.autocast(device, enabled=False))
    module._guard_regions.append(region)

    def feed(value):
        if not isinstance(value, torch.Tensor) or (module.kernel_guard == 'cpu' and value.device.type != 'cpu'):
            return value
        if fp32 and value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
        return value.contiguous()
    return tuple(feed(a) for a in args), {k: feed(v) for k, v in kwargs.items()}


def _leave_guard(module, args, output):
    module._guard_regions.pop().close()
    if module.kernel_guard == 'fp32' and isinstance(output, torch.Tensor) and output.requires_grad:
        return _ContiguousGrad.apply(output)  # the kernel's backward reads its gradient as NCHW memory too


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient (the next op's may be NHWC-strided)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()
