"""FCN, ResNet-50-D8, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py`: 35.94 mIoU single-scale,
37.94 multi-scale + flip (configs/fcn/README.md), trained on 4 GPUs x 4 images.

Every ADE20K recipe of the folder (fcn/fcn_<BACKBONE>_4xb4-<schedule>_ade20k-512x512.py;
README mIoU single-scale / multi-scale + flip):
  BACKBONE   80k (the default)   160k (--max-iters 160000)
  r50-d8     35.94 / 37.94       36.10 / 38.08
  r101-d8    39.61 / 40.83       39.91 / 41.40
The 160k recipes differ from the 80k ones only in the schedule: MAX_ITERS moves the PolyLR end with it.
BACKBONE = 'r18-d8' (no ADE20K recipe, no reference number: CSAIL's ResNet18dilated + C1_deepsup, 33.82
in its own training) is this recipe on a ResNet-18-V1c (resnet18_v1c), the heads sized as mmseg's
fcn_r18-d8 Cityscapes recipes size them (FCN head 128 channels on 512, auxiliary 64 on 256).

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k); the last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).

    python train_fcn.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_fcn.py              # 8 GPUs: total batch 16, as the recipe
    python train_fcn.py --demo                            # demo data on a CPU (make demo), under 3 minutes

--demo (DEMO_SETTINGS below, over common/cli.py's) trains the ResNet-18 variant from scratch, 100
iterations at LR 0.03: 87.7-88.3 mIoU on the demo data, under 3 minutes on 2 cores without AVX-512
(benchmarks/demo/README.md). The ResNet-50 demo it replaced (90.4 mIoU, 8.5 minutes of training there):
    python train_fcn.py --demo --backbone r50-d8 --max-iters 200 --val-interval 200 --lr 0.01
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/fcn_ade20k'          # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50-d8'                 # 'r50-d8', 'r101-d8' or 'r18-d8' (no ADE20K recipe)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py', mIoU=35.94, mIoU_ms=37.94,
                 mem_gb=8.5, fps=23.49, total_batch=16)
REFERENCES = {  # the other recipes of the folder (scripts.reference_for picks by BACKBONE and MAX_ITERS)
    'r50-d8': [dict(config='fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py', mIoU=36.10,
                    mIoU_ms=38.08, settings={'MAX_ITERS': 160_000})],
    'r101-d8': [dict(config='fcn/fcn_r101-d8_4xb4-80k_ade20k-512x512.py', mIoU=39.61,
                     mIoU_ms=40.83),
                dict(config='fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512.py', mIoU=39.91,
                     mIoU_ms=41.40, settings={'MAX_ITERS': 160_000})],
}
# What --demo sets for this script (over common/cli.py DEMO_SETTINGS): the newcomer's first look, kept under
# 3 minutes on a 2-core CPU without AVX-512 (r50-d8 trained 8.5 minutes there); 100 iterations at LR 0.03
# reach what 120 at 0.02 do (benchmarks/demo/README.md).
DEMO_SETTINGS = dict(BACKBONE='r18-d8', MAX_ITERS=100, VAL_INTERVAL=100, LR=0.03)
BACKBONES = {'r50-d8': dict(models.RESNET_V1C['r50'], **models.BOTTLENECK_D8_HEADS),
             'r101-d8': dict(models.RESNET_V1C['r101'], **models.BOTTLENECK_D8_HEADS),
             # No ADE20K recipe: CSAIL's ResNet18dilated + C1_deepsup (docs/recipes.md, models of other codebases).
             'r18-d8': dict(models.RESNET_V1C['r18'], **models.R18_D8_HEADS)}


def build_config(s):
    backbone = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, backbone['pretrained']),
        backbone=models.resnet_v1c(backbone['depth'], dilated=True),
        decode_head=dict(type='FCNHead', in_channels=backbone['in_channels'], in_index=3,
                         channels=backbone['channels'], num_convs=2,
                         concat_input=True, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(backbone['aux_in_channels'], backbone['aux_channels']),
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
