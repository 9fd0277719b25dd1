"""Check that the training stack imports and report what it runs on.

    python -m common.env_check

Imports torchvision, mmseg, mmdet, mmpretrain and mmcv's compiled ops (MultiScaleDeformableAttention,
PSAMask, and CCNet's CrissCrossAttention, which mmcv.ops holds), prints the versions, the device and
whether mmcv was built with CUDA ops; exits 1 with the failing import and how to fix it, or when the
machine has an NVIDIA GPU torch cannot use.
"""
import sys

from common import checks
from common.errors import SetupError, reported


def check_stack():
    """Import the whole stack; return a dict of versions and device facts."""
    torch = checks.import_or_fail('torch')
    torchvision = checks.import_or_fail('torchvision')
    mmengine = checks.import_or_fail('mmengine')
    from common import gpu
    found = gpu.problem()
    if found:  # a GPU torch cannot use is not "ok"
        raise SetupError(*found)
    _, cuda_ops = checks.mmcv_ops_status()
    mmcv = checks.import_or_fail('mmcv')
    mmseg = checks.import_or_fail('mmseg')
    checks.import_or_fail('mmseg.models')
    mmdet = checks.import_or_fail('mmdet')
    mmpretrain = checks.import_or_fail('mmpretrain')
    safetensors = checks.import_or_fail('safetensors')  # --export-safetensors, and reading its files
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
    if torch.cuda.is_available() and not cuda_ops:
        print('[env_check] warning: mmcv has no CUDA ops: Mask2Former, MaskFormer and PSANet cannot train on '
              'this GPU; `bash setup.sh` on this machine builds them', file=sys.stderr)
    return dict(python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
                mmengine=mmengine.__version__, mmcv=mmcv.__version__, mmseg=mmseg.__version__,
                mmdet=mmdet.__version__, mmpretrain=mmpretrain.__version__, safetensors=safetensors.__version__,
                device=device,
                cuda_available=torch.cuda.is_available(), mmcv_cuda_ops=cuda_ops)


def main():
    with reported(label='[env_check] FAILED', exit_code=1):
        info = check_stack()
    width = max(map(len, info))
    for key, value in info.items():
        print(f'[env_check] {key:<{width}} {value}')
    print('[env_check] ok: torchvision, mmseg, mmdet, mmpretrain and mmcv.ops.MultiScaleDeformableAttention import')


if __name__ == '__main__':
    main()
