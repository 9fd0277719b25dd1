"""DeepLabV3+, ResNeSt-101 (S-101, output stride 8), on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `resnest/resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py`: 46.47 mIoU
single-scale, 47.27 multi-scale + flip (configs/resnest/README.md), trained on 4 GPUs x 4 images.
The resnest recipes are the R-101 160k ADE20K recipes of each head with the backbone swapped for
ResNeSt (split attention, radix 2; 128-channel deep stem; avg-pool downsampling). Only S-101 has
ADE20K recipes.

HEAD variants, each its recipe (single-scale / multi-scale + flip mIoU, configs/resnest/README.md):
  deeplabv3plus  resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512    46.47 / 47.27
  deeplabv3      resnest_s101-d8_deeplabv3_4xb4-160k_ade20k-512x512        45.71 / 46.59
  fcn            resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512              45.62 / 46.16
  pspnet         resnest_s101-d8_pspnet_4xb4-160k_ade20k-512x512           45.44 / 46.28

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).

    python train_resnest.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_resnest.py              # 8 GPUs x 2: total batch 16, as the recipe
    python train_resnest.py --demo                            # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/resnest_ade20k'      # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (4 x 4)
MAX_ITERS = 160_000                 # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
HEAD = 'deeplabv3plus'              # 'deeplabv3plus', 'deeplabv3', 'fcn' or 'pspnet' (each its recipe)
PRETRAINED = 'auto'                 # 'auto': the ResNeSt-101 ImageNet file in pretrain/; or a path

REFERENCE = dict(config='resnest/resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py', mIoU=46.47,
                 mIoU_ms=47.27, mem_gb=16.2, fps=11.96, total_batch=16)
HEADS = {  # HEAD -> its recipe and README single-scale / multi-scale + flip mIoU
    'deeplabv3plus': dict(config='resnest/resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py',
                          mIoU=46.47, mIoU_ms=47.27),
    'deeplabv3': dict(config='resnest/resnest_s101-d8_deeplabv3_4xb4-160k_ade20k-512x512.py',
                      mIoU=45.71, mIoU_ms=46.59),
    'fcn': dict(config='resnest/resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py', mIoU=45.62, mIoU_ms=46.16),
    'pspnet': dict(config='resnest/resnest_s101-d8_pspnet_4xb4-160k_ade20k-512x512.py', mIoU=45.44, mIoU_ms=46.28),
}
REFERENCES = HEADS  # each HEAD's recipe numbers (scripts.reference_for)
_PRETRAINED_FILE = 'resnest101_d2-f3b931b2.pth'  # open-mmlab://resnest101


def decode_head(head, norm_cfg):
    """The R-101 recipes' decode heads on the last stage (2048 channels)."""
    shared = dict(in_channels=2048, in_index=3, channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES,
                  norm_cfg=norm_cfg, align_corners=False, loss_decode=models.ce_loss(1.0))
    if head == 'deeplabv3plus':  # low-level features from stage 1 (256 channels)
        return dict(type='DepthwiseSeparableASPPHead', dilations=(1, 12, 24, 36), c1_in_channels=256,
                    c1_channels=48, **shared)
    if head == 'deeplabv3':
        return dict(type='ASPPHead', dilations=(1, 12, 24, 36), **shared)
    if head == 'pspnet':
        return dict(type='PSPHead', pool_scales=(1, 2, 3, 6), **shared)
    return dict(type='FCNHead', num_convs=2, concat_input=True, **shared)


def build_config(s):
    cli.choose('HEAD', s.HEAD, HEADS)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    # The ResNetV1c-101-D8 of the R-101 recipes, as ResNeSt: split attention with radix 2, a 128-channel
    # deep stem, and stride-2 blocks that downsample by average pooling.
    backbone = dict(models.resnet_v1c(101, dilated=True), type='ResNeSt', stem_channels=128, radix=2,
                    reduction_factor=4, avg_down_stride=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, _PRETRAINED_FILE),
        backbone=backbone,
        decode_head=decode_head(s.HEAD, norm_cfg),
        auxiliary_head=models.fcn_aux_head(),
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
