#!/bin/bash
# What GPU code the mmcv of VENV holds: its ELF images by architecture, the kernels of mmcv's deformable
# attention and PSAMask, and that mmcv.ops imports (issue 13 part 2; benchmarks/mmcv_cuda_build.md).
# CUOBJDUMP: NVIDIA's cuobjdump, e.g. from the registry package nvidia-cuda-cuobjdump (bin/cuobjdump).
set -u
V=${1:?usage: tools/gpu_check/mmcv_cuda_report.sh VENV CUOBJDUMP}
CUOBJ=${2:?usage: tools/gpu_check/mmcv_cuda_report.sh VENV CUOBJDUMP}
SO=$(ls $V/lib/python3*/site-packages/mmcv/_ext*.so)
echo "== extension: $SO ($(du -h "$SO" | cut -f1))"
echo "== wheel: $(ls -la ~/.cache/ade20k-train/wheels/*cu*/mmcv-2.1.0-*.whl 2>/dev/null)"
echo "== cuobjdump: $($CUOBJ --version | tail -1)"
echo "== ELF images by architecture (cuobjdump --list-elf):"
$CUOBJ --list-elf "$SO" | sed -n 's/.*\.\(sm_[0-9a-z]*\)\.cubin$/\1/p' | sort | uniq -c
echo "== PTX images (cuobjdump --list-ptx): $($CUOBJ --list-ptx "$SO" 2>/dev/null | wc -l)"
echo "== the two ops' kernels (function symbols in those sm_90 images; cuobjdump --dump-elf-symbols, demangled, x template instances):"
$CUOBJ --dump-elf-symbols "$SO" | grep STT_FUNC | grep -oE "_Z[0-9A-Za-z_]*(ms_deformable|psamask)[0-9A-Za-z_]*" | c++filt | sed 's/(.*//;s/<.*//' | sort | uniq -c
echo "== import in that venv:"
$V/bin/python - <<'PY'
import torch, mmcv, mmcv.ops
from mmcv.utils import ext_loader
ext = ext_loader.load_ext('_ext', ['ms_deform_attn_forward', 'psamask_forward'])
print('torch', torch.__version__, 'cuda', torch.version.cuda, '| mmcv', mmcv.__version__)
print('mmcv.ops imports; MultiScaleDeformableAttention, PSAMask:', mmcv.ops.MultiScaleDeformableAttention.__name__, mmcv.ops.PSAMask.__name__)
print('ext ms_deform_attn_forward, psamask_forward:', bool(ext.ms_deform_attn_forward), bool(ext.psamask_forward))
print('built with CUDA (mmcv.ops get_compiling_cuda_version):', ext_loader.load_ext('_ext', ['get_compiling_cuda_version']).get_compiling_cuda_version())
PY
