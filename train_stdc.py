"""STDC1 (STDC-Seg: STDCNet + context path + boundary head) on ADE20K: 512x512 crops, 80k iterations.

MMSegmentation 1.2.2 has NO ADE20K recipe for STDC: its only recipes are Cityscapes ones, so there is
no reference mIoU to compare with. This script is the Cityscapes recipe
`stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py` (stdc1_4xb12-80k_cityscapes-512x1024.py with
the ImageNet-pretrained STDCNet1) moved to ADE20K, and nothing else changed:
- the model, schedule and optimizer are the recipe's: SGD lr 0.01, a 1000-step linear warmup from
  0.1 x LR, then PolyLR to 1e-4 at 80k; plain BN (not SyncBN), OHEM on the segmentation heads, the
  Laplacian boundary head (2 classes: edge or not, BCE + Dice) on the detail branch;
- the data is ADE20K as every mmseg ADE20K recipe trains on it (configs/_base_/datasets/ade20k.py):
  150 classes, label 0 ignored, RandomResize to (2048, 512) x 0.5-2.0, 512x512 crops, whole-image test
  at (2048, 512); the recipe pads to 512x1024 and the Cityscapes pipelines crop 512x1024.
So the decode head and the two auxiliary FCN heads predict 150 classes instead of 19: the built
network differs from the Cityscapes one only in their three 1x1 classifier convolutions
(64/256 -> 150 outputs, not 19).

BACKBONE = 'stdc2' builds the STDC2 recipe (stdc2_in1k-pre_4xb12-80k_cityscapes-512x1024.py) the same way.

Deviations from the (Cityscapes) recipe:
- The data and the class count, as above: that is what this script is for.
- BATCH_PER_GPU = 2 (recipe 12 on each of 4 GPUs, total 48): the run prints the --accumulate that restores
  48 where one does (1 GPU: 24; 8 GPUs: --batch-per-gpu 6). BN statistics are per GPU (the recipe's BN is not synchronised), so they come from
  BATCH_PER_GPU images: raise it on a large GPU rather than relying on --accumulate alone.
- Evaluation and checkpoint every 4000 iterations (recipe 8000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).

    python train_stdc.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_stdc.py              # 8 GPUs x 2 (the recipe: 4 x 12 = 48)
    python train_stdc.py --demo                            # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/stdc_ade20k'         # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 48 (4 x 12)
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
WARMUP_ITERS = 1_000                # linear warmup from 0.1 x LR, steps (recipe)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'stdc1'                  # 'stdc1' or 'stdc2'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet STDCNet file in pretrain/; or a path

# No ADE20K result exists: the config is the Cityscapes recipe this script moves to ADE20K.
REFERENCE = dict(config='stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py', mIoU=None, mIoU_ms=None,
                 mem_gb=None, fps=None, total_batch=48)
# Differ from the Cityscapes config because of the dataset (the docstring): tools.recipes.recipes.compare.
_ADE20K = 'ADE20K, not Cityscapes: what this script is for'
DEVIATIONS = {'model.decode_head.num_classes': '150 classes (ADE20K), not 19',
              'model.auxiliary_head[0].num_classes': '150 classes (ADE20K), not 19',
              'model.auxiliary_head[1].num_classes': '150 classes (ADE20K), not 19',
              'model.data_preprocessor.size': "512x512 pad, ADE20K's crop (Cityscapes: 512x1024)",
              'train_dataloader.dataset': _ADE20K, 'val_dataloader.dataset': _ADE20K,
              'test_dataloader.dataset': _ADE20K}
BACKBONES = {
    'stdc1': dict(stdc_type='STDCNet1', pretrained='stdc1_20220308-5368626c.pth'),
    'stdc2': dict(stdc_type='STDCNet2', pretrained='stdc2_20220308-7dbd9127.pth'),
}


def ohem():
    """Online hard example mining: pixels below 0.7 confidence, at least 10000 per image."""
    return dict(type='OHEMPixelSampler', thresh=0.7, min_kept=10000)


def fcn_head(in_channels, channels, in_index, align_corners, norm_cfg):
    return dict(type='FCNHead', in_channels=in_channels, channels=channels, num_convs=1,
                num_classes=ade20k.NUM_CLASSES, in_index=in_index, concat_input=False, norm_cfg=dict(norm_cfg),
                align_corners=align_corners, sampler=ohem(), loss_decode=models.ce_loss(1.0))


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    norm_cfg = dict(type='BN', requires_grad=True)  # the recipe's: plain BN, per-GPU statistics
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=None,
        backbone=dict(
            type='STDCContextPathNet',
            backbone_cfg=dict(type='STDCNet', stdc_type=variant['stdc_type'], in_channels=3,
                              channels=(32, 64, 256, 512, 1024), bottleneck_type='cat', num_convs=4,
                              norm_cfg=dict(norm_cfg), act_cfg=dict(type='ReLU'), with_final_conv=False,
                              init_cfg=pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])),
            last_in_channels=(1024, 512), out_channels=128,
            ffm_cfg=dict(in_channels=384, out_channels=256, scale_factor=4)),
        # Outputs: 0 the detail (1/8) features, 1-2 the context path at 1/16 and 1/8, 3 the fused map.
        decode_head=dict(fcn_head(256, 256, 3, True, norm_cfg), dropout_ratio=0.1),
        auxiliary_head=[
            fcn_head(128, 64, 2, False, norm_cfg),
            fcn_head(128, 64, 1, False, norm_cfg),
            # Detail guidance: edges of the label map (Laplacian, 3 scales) learned on the detail branch.
            dict(type='STDCHead', in_channels=256, channels=64, num_convs=1, num_classes=2, boundary_threshold=0.1,
                 in_index=0, norm_cfg=dict(norm_cfg), concat_input=False, align_corners=True,
                 loss_decode=[dict(type='CrossEntropyLoss', loss_name='loss_ce', use_sigmoid=True, loss_weight=1.0),
                              dict(type='DiceLoss', loss_name='loss_dice', loss_weight=1.0)]),
        ],
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    sgd = schedules.sgd_poly(lr=s.LR, **schedules.steps(s))
    sgd['param_scheduler'] = schedules.warmup_then(  # the recipe's LinearLR warmup from 0.1 x LR, then PolyLR
        dict(type='PolyLR', eta_min=1e-4, power=0.9), warmup_iters=s.WARMUP_ITERS, start_factor=0.1,
        max_iters=s.MAX_ITERS, accumulate=s.ACCUMULATE)
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **sgd,
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
