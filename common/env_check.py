"""Check that the training stack imports and report what it runs on.

    python -m common.env_check

Imports torchvision, mmseg, mmdet, mmpretrain and mmcv's compiled ops (MultiScaleDeformableAttention,
PSAMask), prints the versions, the device and whether mmcv was built with CUDA ops; exits 1 with
the failing import and how to fix it.
"""
import importlib
import sys

from common.errors import SetupError

REINSTALL = 'run `bash setup.sh` at the repository root (it rebuilds .venv from requirements/lock.txt)'


def _import(module):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # any failure here means a broken install
        raise SetupError(f'cannot import {module}: {type(exc).__name__}: {exc}', REINSTALL) from exc


def mmcv_ops_status():
    """(has_compiled_ops, has_cuda_ops). Raises SetupError when mmcv's compiled `_ext` is missing."""
    _import('mmcv')
    try:
        from mmcv.ops import MultiScaleDeformableAttention, PSAMask  # noqa: F401
        ext = importlib.import_module('mmcv._ext')
    except Exception as exc:
        raise SetupError(
            f'mmcv has no compiled ops ({type(exc).__name__}: {exc}); mmseg 1.2.2 imports them at '
            'import time, so mmcv-lite or a mismatched build cannot work',
            REINSTALL + ' (it compiles mmcv 2.1.0 with MMCV_WITH_OPS=1)') from exc
    has_cuda = hasattr(ext, 'ms_deform_attn_forward') and _ext_built_with_cuda()
    return True, has_cuda


def _ext_built_with_cuda():
    from mmcv.utils import ext_loader  # noqa: F401
    try:
        from mmcv.ops.info import get_compiling_cuda_version
        version = get_compiling_cuda_version()
        return version not in ('not available', '', None)
    except Exception:
        return False


def check_stack():
    """Import the whole stack; return a dict of versions and device facts."""
    torch = _import('torch')
    torchvision = _import('torchvision')
    mmengine = _import('mmengine')
    _, cuda_ops = mmcv_ops_status()
    mmcv = _import('mmcv')
    mmseg = _import('mmseg')
    _import('mmseg.models')
    mmdet = _import('mmdet')
    mmpretrain = _import('mmpretrain')
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
    return dict(python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
                mmengine=mmengine.__version__, mmcv=mmcv.__version__, mmseg=mmseg.__version__,
                mmdet=mmdet.__version__, mmpretrain=mmpretrain.__version__, device=device,
                cuda_available=torch.cuda.is_available(), mmcv_cuda_ops=cuda_ops)


def main():
    try:
        info = check_stack()
    except SetupError as err:
        print(f'[env_check] FAILED: {err}', file=sys.stderr)
        sys.exit(1)
    width = max(map(len, info))
    for key, value in info.items():
        print(f'[env_check] {key:<{width}} {value}')
    print('[env_check] ok: torchvision, mmseg, mmdet, mmpretrain and mmcv.ops.MultiScaleDeformableAttention import')


if __name__ == '__main__':
    main()
