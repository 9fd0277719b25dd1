"""Watch what reaches mmcv's compiled kernels during a run: the check behind "every op that runs a
compiled mmcv kernel gets fp32, contiguous inputs" (common/speed.py guard_kernels).

Two layers, so that a new script cannot bring the problem back unseen:
- every module whose forward may run a compiled kernel (kernel_guard.runs_compiled_kernel) or that needs NCHW
  inputs (kernel_guard.NCHW_ONLY) must carry the guard when it is called (a global forward hook);
- every call into mmcv's compiled extension (each mmcv.ops module's `ext_module`) must get float
  tensors in fp32 or fp64 and contiguous: this catches a kernel reached from anywhere, guarded
  module or not. On a CPU some ops fall back to PyTorch code (mmcv's deformable attention does), which
  only the first layer sees.
"""
import sys

import torch

from common import kernel_guard


class _CheckedExtension:
    """Stands in for an mmcv.ops module's `ext_module` and checks the tensors of each kernel call."""

    def __init__(self, real, found, owner):
        self._real, self._found, self._owner = real, found, owner

    def __getattr__(self, name):
        kernel = getattr(self._real, name)

        def call(*args, **kwargs):
            for value in [*args, *kwargs.values()]:
                if not isinstance(value, torch.Tensor):
                    continue
                if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
                    self._found.append(f'{self._owner}.{name}: a {value.dtype} input')
                elif not value.is_contiguous():
                    self._found.append(f'{self._owner}.{name}: a non-contiguous input {tuple(value.shape)} '
                                       f'strides {value.stride()}')
            return kernel(*args, **kwargs)
        return call


class KernelWatch:
    """`with KernelWatch() as watch:` ... `watch.problems` lists each unguarded module called and each
    compiled-kernel call with a low-precision or non-contiguous input; `watch.kernel_calls` counts calls."""

    def __init__(self):
        self.problems, self.kernel_calls, self.guarded_calls = [], 0, 0
        self._restore, self._handle = [], None

    def __enter__(self):
        import mmcv.ops  # noqa: F401  every op module loaded, so each ext_module is replaced
        for name, module in list(sys.modules.items()):
            real = getattr(module, 'ext_module', None)
            if name.startswith('mmcv.ops.') and real is not None and not isinstance(real, _CheckedExtension):
                counting = _Counting(self, real)
                module.ext_module = _CheckedExtension(counting, self.problems, name)
                self._restore.append((module, real))

        def after_forward(module, args, output):
            needs = kernel_guard.runs_compiled_kernel(module) or kernel_guard._qualname(module) in kernel_guard.NCHW_ONLY
            if needs:
                if getattr(module, 'kernel_guard', None):
                    self.guarded_calls += 1
                else:
                    self.problems.append(f'{kernel_guard._qualname(module)} called without the kernel guard')
        self._handle = torch.nn.modules.module.register_module_forward_hook(after_forward, always_call=True)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        for module, real in self._restore:
            module.ext_module = real
        return False


class _Counting:
    def __init__(self, watch, real):
        self._watch, self._real = watch, real

    def __getattr__(self, name):
        kernel = getattr(self._real, name)

        def call(*args, **kwargs):
            self._watch.kernel_calls += 1
            return kernel(*args, **kwargs)
        return call
