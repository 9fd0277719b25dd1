"""PointRend, ResNet-50 + FPN, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `point_rend/pointrend_r50_4xb4-160k_ade20k-512x512.py`: 37.64 mIoU
single-scale, 39.17 multi-scale + flip (configs/point_rend/README.md), trained on 4 GPUs x 4 images.
A two-stage CascadeEncoderDecoder: a Semantic FPN head makes a coarse prediction, then a PointHead
re-predicts the most uncertain points from the stride-4 features and the coarse logits. PointHead
samples with mmcv.ops.point_sample (plain PyTorch grid_sample, but reached through mmcv.ops, so it
needs mmcv's compiled ops to import).

BACKBONE = 'r101' builds the recipe's R-101 variant (pointrend_r101_4xb4-160k_ade20k-512x512.py):
40.02 single-scale, 41.60 multi-scale + flip.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).

    python train_pointrend.py                             # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_pointrend.py        # 8 GPUs: total batch 16, as the recipe
    python train_pointrend.py --demo                      # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/pointrend_ade20k'    # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (4 x 4)
MAX_ITERS = 160_000                 # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
WARMUP_ITERS = 200                  # linear warmup from 0.1 x LR, steps (recipe)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50'                    # 'r50' or 'r101'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='point_rend/pointrend_r50_4xb4-160k_ade20k-512x512.py', mIoU=37.64, mIoU_ms=39.17,
                 mem_gb=5.1, fps=17.31, total_batch=16)
REFERENCES = {  # the variants' own recipes (scripts.reference_for)
    'r101': dict(config='point_rend/pointrend_r101_4xb4-160k_ade20k-512x512.py', mIoU=40.02, mIoU_ms=41.60,
                 mem_gb=6.1, fps=15.50),
}
BACKBONES = {'r50': models.RESNET_V1C['r50'], 'r101': models.RESNET_V1C['r101']}


def sgd_warmup_poly(s):
    """schedule_160k's SGD and PolyLR, after a LinearLR warmup from 0.1 x LR (the PointRend recipe)."""
    bundle = schedules.sgd_poly(lr=s.LR, **schedules.steps(s))
    bundle['param_scheduler'] = schedules.warmup_then(
        dict(type='PolyLR', eta_min=1e-4, power=0.9), warmup_iters=s.WARMUP_ITERS, start_factor=0.1,
        max_iters=s.MAX_ITERS, accumulate=s.ACCUMULATE)
    return bundle


def build_config(s):
    backbone = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    num_classes = ade20k.NUM_CLASSES
    model = dict(
        type='CascadeEncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        num_stages=2,
        pretrained=pretrained.resolve(s.PRETRAINED, backbone['pretrained']),
        backbone=models.resnet_v1c(backbone['depth'], dilated=False),
        neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4),
        decode_head=[
            dict(type='FPNHead', in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3],
                 feature_strides=[4, 8, 16, 32], channels=128, dropout_ratio=-1, num_classes=num_classes,
                 norm_cfg=norm_cfg, align_corners=False, loss_decode=models.ce_loss(1.0)),
            dict(type='PointHead', in_channels=[256], in_index=[0], channels=256, num_fcs=3,
                 coarse_pred_each_layer=True, dropout_ratio=-1, num_classes=num_classes, align_corners=False,
                 loss_decode=models.ce_loss(1.0)),
        ],
        # Train: 2048 points per image, 3x oversampled, 75% of them the most uncertain.
        train_cfg=dict(num_points=2048, oversample_ratio=3, importance_sample_ratio=0.75),
        # Test: 2 rounds of 2x upsampling, re-predicting the 8196 most uncertain points each round.
        test_cfg=dict(mode='whole', subdivision_steps=2, subdivision_num_points=8196, scale_factor=2))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **sgd_warmup_poly(s),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
