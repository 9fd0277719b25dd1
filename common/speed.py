"""Speed levers: how a run uses the machine, chosen at start from the settings and the device.

The scripts' configs are the recipes (what `--dump-config` writes and the recipe tests compare);
`apply()` then adapts a run to the machine without changing what is learned:

    PRECISION       'auto': bf16 autocast on a GPU with bf16 (Ampere and newer), fp16 with loss
                    scaling on older GPUs, fp32 on a CPU; or 'bf16', 'fp16', 'fp32' to force one.
                    bf16 has fp32's exponent range, so it needs no loss scaling; training and
                    evaluation both run under it. Ops without a bf16 kernel (mmcv's deformable
                    attention, Mask2Former's pixel decoder) run in fp32 inside it.
    CHANNELS_LAST   'auto': NHWC weights and activations on a GPU (tensor cores want them).
    TF32            TF32 matmuls and convolutions for what still runs in fp32 (GPU).
    FUSED_OPTIMIZER 'auto': one fused kernel for the SGD/AdamW step instead of one per tensor, on a GPU;
                    'on' on the CPU too (its rounding differs from the per-tensor step's), 'off'.
                    A fused step can also skip itself on the device (`found_inf`), which is how
                    the non-finite-loss guard avoids a host read per iteration (common.resilience).
    COMPILE         torch.compile the backbone and neck (in place: checkpoint keys unchanged); off until
                    measured. mmengine's own `compile` (the whole train step) fails in dynamo on
                    mmengine 0.10.7's optimizer wrapper with torch 2.13.
    NUM_WORKERS     -1: workers sized from the CPUs per GPU process (common.ade20k), pinned memory
                    and a deeper prefetch on a GPU.

cuDNN autotuning (`cudnn_benchmark`) is on in every run (common.runtime.defaults). What a run
uses is `plan(s)`, a dict passed to whatever needs it (the run, the banner, summary.json's `speed`,
evaluation); nothing is stored on the settings.
"""
import os
from contextlib import ExitStack, contextmanager, nullcontext

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import LOOPS, OPTIM_WRAPPERS
from mmengine.runner import Runner, ValLoop, TestLoop

from common import activation_ckpt, config, kernel_guard, validate
from common.resilience import LossGuard

PRECISIONS = validate.PRECISIONS
DTYPE_NAMES = {'bf16': 'bfloat16', 'fp16': 'float16'}  # as mmengine's configs name torch dtypes
_FUSABLE = {'SGD', 'Adam', 'AdamW'}


# ---------------------------------------------------------------- choosing

def resolve_precision(requested, cuda=None, bf16_supported=None):
    """The precision a run uses: `requested`, or for 'auto' the fastest safe one for the device."""
    from common.errors import SetupError
    if requested not in PRECISIONS:
        raise SetupError(f'PRECISION {requested!r} is not one of {", ".join(PRECISIONS)}',
                         'use --precision auto (bf16 on a GPU, fp32 on a CPU), bf16, fp16 or fp32')
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested != 'auto':
        return requested
    if not cuda:
        return 'fp32'
    bf16_supported = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    return 'bf16' if bf16_supported else 'fp16'


_ON, _OFF = set(validate.SWITCH_ON), set(validate.SWITCH_OFF)


def resolve_switch(requested, cuda=None, flag='--channels-last'):
    """'auto' (on a GPU), 'on' or 'off' (validate.SWITCH_ON/OFF spellings) -> bool; `flag` names the
    setting in the error."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    value = str(requested).lower()
    if value == 'auto':
        return cuda
    if value in _ON | _OFF:
        return value in _ON
    from common.errors import SetupError
    raise SetupError(f'{flag} {requested!r} is not auto, on or off', f'use {flag} auto, on or off')


def plan(s, cuda=None, bf16_supported=None):
    """What this run will use, from the settings: a dict printed in the banner and kept in summary.json."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return dict(precision=resolve_precision(s.PRECISION, cuda, bf16_supported),
                channels_last=resolve_switch(s.CHANNELS_LAST, cuda, '--channels-last'),
                tf32=bool(s.TF32 and cuda), fused_optimizer=resolve_switch(s.FUSED_OPTIMIZER, cuda, '--fused-optimizer'),
                compile=bool(s.COMPILE), cudnn_benchmark=True,
                # memory rather than speed, said beside the levers (common/activation_ckpt.py writes it in the config)
                activation_ckpt=bool(getattr(s, 'ACTIVATION_CKPT', False)))


def describe(speed):
    on = [name for name in ('channels_last', 'tf32', 'fused_optimizer', 'compile', 'cudnn_benchmark', 'activation_ckpt')
          if speed.get(name)]
    return f'{speed["precision"]}' + (f' + {", ".join(on)}' if on else '')


# ---------------------------------------------------------------- applying

def apply(cfg, speed, cuda=None):
    """Rewrite a run's config for `speed` (from plan()). Returns cfg."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    precision = speed['precision']
    wrapper = cfg['optim_wrapper']
    for key in ('loss_scale', 'dtype'):
        wrapper.pop(key, None)
    if precision == 'fp32':
        wrapper['type'] = 'GuardedOptimWrapper'
    elif precision == 'fp16':
        wrapper.update(type='ScaledAutocastOptimWrapper', dtype=DTYPE_NAMES['fp16'], loss_scale='dynamic')
    else:
        wrapper.update(type='AutocastOptimWrapper', dtype=DTYPE_NAMES[precision])
    if precision != 'fp32':
        for loop in ('val_cfg', 'test_cfg'):
            base = cfg[loop].get('type', 'ValLoop' if loop == 'val_cfg' else 'TestLoop')
            cfg[loop] = dict(type=f'Autocast{base}', dtype=DTYPE_NAMES[precision])
        # So a config written from this run (work_dir/<time>/vis_data/config.py) builds elsewhere too.
        config.add_imports(cfg, 'common.speed')
    if speed['fused_optimizer'] and wrapper.get('optimizer', {}).get('type') in _FUSABLE:
        wrapper['optimizer']['fused'] = True
    if cuda:
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[loader]['pin_memory'] = True
            if cfg[loader].get('num_workers', 0) > 0:
                cfg[loader]['prefetch_factor'] = 4
    return cfg


@contextmanager
def global_flags(speed):
    """Process-wide switches (TF32) that a config cannot carry, for the duration of a run."""
    stock = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    if speed['tf32']:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision('high')
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = stock[:2]
        torch.set_float32_matmul_precision(stock[2])


def autocast(device_type, dtype):
    """The autocast region of a run: `dtype` a torch dtype name ('bfloat16', 'float16') or a
    precision ('bf16', 'fp16'); fp32 or None: no autocast. Training (AutocastOptimWrapper), the
    validation and test loops and --eval-only all run under this one helper."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix('torch.')
    dtype = DTYPE_NAMES.get(dtype, dtype)
    if dtype in (None, 'fp32', 'float32'):
        return nullcontext()
    return torch.autocast(device_type, dtype=getattr(torch, dtype))


def _device_type(model):
    return next(model.parameters()).device.type


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(LossGuard, OptimWrapper):
    """Mixed precision without loss scaling: the forward and loss run under torch.autocast on the
    model's device (CPU or GPU). For bf16, whose range is fp32's; mmengine's AmpOptimWrapper adds
    a GPU-only loss scaler that bf16 does not need."""

    def __init__(self, dtype='bfloat16', **kwargs):
        super().__init__(**kwargs)
        self.dtype = dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), autocast(_device_type(model), self.dtype):
            yield


@OPTIM_WRAPPERS.register_module()
class ScaledAutocastOptimWrapper(LossGuard, AmpOptimWrapper):
    """fp16: mmengine's AmpOptimWrapper (autocast, dynamic loss scaling: fp16's range needs it) on the
    model's own device. mmengine's builds a CUDA-only GradScaler and refuses a CPU; this one takes
    torch.amp.GradScaler for the device of the parameters, so fp16 runs (and is tested) on a CPU too.
    Its state_dict is AmpOptimWrapper's: checkpoints resume across the two."""

    def __init__(self, loss_scale='dynamic', dtype='float16', **kwargs):
        OptimWrapper.__init__(self, **kwargs)  # not AmpOptimWrapper's: it asserts a GPU
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        self.device_type = params[0].device.type if params else 'cpu'
        self._scale_update_param = None
        if isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            scaler_args = dict(init_scale=loss_scale)
        else:
            scaler_args = loss_scale if isinstance(loss_scale, dict) else {}
        self.loss_scaler = torch.amp.GradScaler(self.device_type, **scaler_args)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    @contextmanager
    def optim_context(self, model):
        with OptimWrapper.optim_context(self, model), autocast(_device_type(model), self.cast_dtype):
            yield


class _AutocastLoopMixin:
    def __init__(self, runner, dataloader, evaluator, dtype='bfloat16'):
        super().__init__(runner, dataloader, evaluator, fp16=False)
        self.dtype = dtype

    def run_iter(self, idx, data_batch):
        with autocast(_device_type(self.runner.model), self.dtype):
            super().run_iter(idx, data_batch)


@LOOPS.register_module()
class AutocastValLoop(_AutocastLoopMixin, ValLoop):
    """Validation under autocast in the run's dtype (mmengine's `fp16=True` knows only float16)."""


@LOOPS.register_module()
class AutocastTestLoop(_AutocastLoopMixin, TestLoop):
    """Testing under autocast in the run's dtype."""


# ---------------------------------------------------------------- the runner

COMPILED_PARTS = ('backbone', 'neck')  # called as modules, tensors in and out: what dynamo takes whole
# torch.compile's backend. The tests set ADE_COMPILE_BACKEND=aot_eager: the same graph capture and
# autograd tracing without inductor's code generation, which alone takes minutes on 2 CPU cores.
COMPILE_BACKEND = os.environ.get('ADE_COMPILE_BACKEND', 'inductor')


class FastRunner(Runner):
    """mmengine's Runner, converting the model to channels_last, checkpointing its backbone's blocks
    (the config's activation_ckpt) and compiling its backbone and neck before it is wrapped for DDP
    (so DDP's gradient buckets match the parameters' layout)."""
    channels_last = False
    compile_parts = False

    def wrap_model(self, model_wrapper_cfg, model):
        non_blocking_inputs(model)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        kernel_guard.guard_kernels(model)  # after the layout change: guarded modules go back to NCHW
        if self.cfg.get(activation_ckpt.KEY):
            activation_ckpt.install(model, self.cfg[activation_ckpt.KEY])
        if self.compile_parts:
            for name in COMPILED_PARTS:
                part = getattr(model, name, None)
                if isinstance(part, torch.nn.Module):
                    part.compile(backend=COMPILE_BACKEND)  # in place: state_dict keys stay as they are
        return super().wrap_model(model_wrapper_cfg, model)


def runner_class(speed):
    return type('FastRunner', (FastRunner,), dict(channels_last=speed['channels_last'],
                                                  compile_parts=speed['compile']))



# ---------------------------------------------------------------- no host wait in an iteration

def _accuracy(pred, target, topk=1, thresh=None, ignore_index=None):
    """mmseg's `accuracy` (the logged acc_seg), the same numbers without its two boolean-mask
    indexings, each of which waits for the GPU (the result's size depends on the data)."""
    single = isinstance(topk, int)
    topk = (topk,) if single else topk
    if pred.size(0) == 0:
        found = [pred.new_tensor(0.) for _ in topk]
        return found[0] if single else found
    pred_value, pred_label = pred.topk(max(topk), dim=1)
    pred_label = pred_label.transpose(0, 1)
    correct = pred_label.eq(target.unsqueeze(0).expand_as(pred_label))
    if thresh is not None:
        correct = correct & (pred_value > thresh).t()
    eps = torch.finfo(torch.float32).eps
    if ignore_index is not None:
        valid = target != ignore_index
        correct = correct & valid.unsqueeze(0)  # ignored pixels count as not correct, and not in total
        # float64 as mmseg's Python float, then the same float32 factor its mul_ uses
        factor = (100.0 / (valid.sum().double() + eps)).float()
    else:
        factor = 100.0 / (target.numel() + eps)
    found = [(correct[:k].reshape(-1).float().sum(0, keepdim=True) + eps).mul_(factor) for k in topk]
    return found[0] if single else found


@contextmanager
def sync_free_accuracy():
    """_accuracy where mmseg's heads call `accuracy`, for the duration of a run; mmseg's own after."""
    from mmseg.models.decode_heads import decode_head, point_head
    stock = [(module, module.accuracy) for module in (decode_head, point_head)]
    for module, _ in stock:
        module.accuracy = _accuracy
    try:
        yield
    finally:
        for module, accuracy in stock:
            module.accuracy = accuracy


def non_blocking_inputs(model):
    """The data preprocessor copies each batch to the GPU without waiting for it (pinned memory,
    common.speed.apply); mmseg's SegDataPreProcessor takes no such argument."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    if preprocessor is not None and hasattr(preprocessor, '_non_blocking'):
        preprocessor._non_blocking = True
