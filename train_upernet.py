"""UPerNet, ResNet-50, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `upernet/upernet_r50_4xb4-80k_ade20k-512x512.py`: 40.7 mIoU single-scale,
41.81 multi-scale + flip (configs/upernet/README.md), trained on 4 GPUs x 4 images.

Every ADE20K recipe of the folder (upernet/upernet_<BACKBONE>_4xb4-<schedule>_ade20k-512x512.py;
mIoU single-scale / multi-scale + flip, the wheel's metafile):
  BACKBONE   80k (the default)   160k (--max-iters 160000)
  r18        -                   -              (ResNet-18-V1c; no published result in the wheel)
  r50        40.70 / 41.81       42.05 / 42.78
  r101       42.91 / 43.96       43.82 / 44.85
The 160k recipes differ from the 80k ones only in the schedule: MAX_ITERS moves the PolyLR end with it.
R-18 has basic blocks (stage widths 64..512, not 256..2048): the head reads [64, 128, 256, 512] and
the auxiliary head stage 3's 256 channels. Its ImageNet weights (open-mmlab://resnet18_v1c):
https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth in pretrain/.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k); the last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).
- BACKBONE = 'r18' pads every training batch to the crop (data_preprocessor size 512x512), as the
  R-50 and R-101 recipes do. The upstream upernet_r18 files omit `data_preprocessor = dict(size=...)`
  (reference §4.11), so their batches pad only to the largest image of the batch.

    python train_upernet.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_upernet.py              # 8 GPUs: total batch 16, as the recipe
    python train_upernet.py --demo                            # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/upernet_ade20k'        # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50'                    # 'r18', 'r50' or 'r101' (ResNet-V1c)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='upernet/upernet_r50_4xb4-80k_ade20k-512x512.py', mIoU=40.7, mIoU_ms=41.81,
                 mem_gb=8.1, fps=23.4, total_batch=16)
# The upstream R-18 files leave data_preprocessor.size unset (docstring): here it is the crop.
_R18_PAD = {'model.data_preprocessor.size': 'pads to the crop as the R-50/R-101 recipes; the upstream R-18 '
                                            'files omit data_preprocessor size (a bug, docstring)'}
REFERENCES = {  # the other recipes of the folder (scripts.reference_for picks by BACKBONE and MAX_ITERS)
    'r18': [dict(config='upernet/upernet_r18_4xb4-80k_ade20k-512x512.py', mIoU=None, mIoU_ms=None,
                 deviations=_R18_PAD),
            dict(config='upernet/upernet_r18_4xb4-160k_ade20k-512x512.py', mIoU=None, mIoU_ms=None,
                 settings={'MAX_ITERS': 160_000}, deviations=_R18_PAD)],
    'r50': [dict(config='upernet/upernet_r50_4xb4-160k_ade20k-512x512.py', mIoU=42.05, mIoU_ms=42.78,
                 settings={'MAX_ITERS': 160_000})],
    'r101': [dict(config='upernet/upernet_r101_4xb4-80k_ade20k-512x512.py', mIoU=42.91, mIoU_ms=43.96),
             dict(config='upernet/upernet_r101_4xb4-160k_ade20k-512x512.py', mIoU=43.82, mIoU_ms=44.85,
                  settings={'MAX_ITERS': 160_000})],
}
# Stage widths: basic blocks end at 512 channels, bottlenecks at 2048.
BACKBONES = {
    'r18': dict(models.RESNET_V1C['r18'], channels=[64, 128, 256, 512]),
    'r50': dict(models.RESNET_V1C['r50'], channels=[256, 512, 1024, 2048]),
    'r101': dict(models.RESNET_V1C['r101'], channels=[256, 512, 1024, 2048]),
}


def build_config(s):
    backbone = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, backbone['pretrained']),
        backbone=models.resnet_v1c(backbone['depth'], dilated=False),
        decode_head=dict(type='UPerHead', in_channels=backbone['channels'], in_index=[0, 1, 2, 3],
                         pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES,
                         norm_cfg=norm_cfg, align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(in_channels=backbone['channels'][2]),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedules.sgd_poly(lr=s.LR, **schedules.steps(s)),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
