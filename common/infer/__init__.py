"""Use a trained checkpoint instead of training: evaluate, predict, export (ONNX, safetensors), count FLOPs.

One module per mode (MODES); common/infer/model.py is the one offline model they share.

Every train script has these flags (common/cli.py); pass the same model settings as the training
run (e.g. --backbone, --crop-size: the test resize follows CROP_SIZE), since the script builds the
model and pipelines from them:

    python train_fcn.py --eval-only work_dirs/fcn_ade20k/iter_80000.pth            # per-class IoU/Acc table
    python train_fcn.py --eval-only work_dirs/fcn_ade20k/iter_80000.pth --tta      # multi-scale + flip
    python train_fcn.py --predict work_dirs/fcn_ade20k/iter_80000.pth photos/ --out preds/
    python train_fcn.py --predict work_dirs/fcn_ade20k/iter_80000.pth clip.mp4 --opacity 0.6
    python train_fcn.py --export-onnx work_dirs/fcn_ade20k/iter_80000.pth          # -> work_dirs/fcn_ade20k/fcn.onnx
    python train_fcn.py --export-safetensors work_dirs/fcn_ade20k/iter_80000.pth   # -> .../iter_80000_safetensors/
    python train_fcn.py --flops --flops-size 512,512

What each mode writes: its module's docstring (evaluate.py, predict.py, export_onnx.py,
export_safetensors.py, flops.py). A .safetensors file is a CKPT for every mode (common/checkpoints.py).
"""
import copy

from common import dist
from common.errors import SetupError
from common.infer import evaluate, export_onnx, export_safetensors, flops, predict

# run option (cli.py) -> the mode's run(cfg, s, plan); several may be given, run in this order
MODES = {'flops': flops.run, 'eval_only': evaluate.run, 'predict': predict.run, 'export_onnx': export_onnx.run,
         'export_safetensors': export_safetensors.run}


def requested(s):
    """True when the flags ask for one of the modes instead of training."""
    return any(getattr(s, option) for option in MODES)


def dispatch(cfg, s, plan):
    """Run what the flags ask for, each with its own model, in one process on this machine."""
    if dist.launcher_from_env() != 'none':
        raise SetupError('--eval-only, --predict, --export-onnx, --export-safetensors and --flops run in one process',
                         'start the script with `python`, not torchrun or srun')
    cfg = copy.deepcopy(cfg)
    cfg['launcher'] = 'none'
    for option, run in MODES.items():
        if getattr(s, option):
            run(cfg, s, plan)
