"""DeepLabV3, MobileNetV2 (output stride 8), on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py`: 34.08 mIoU
single-scale (configs/mobilenet_v2/README.md; no multi-scale result), trained on 4 GPUs x 4 images.
The mobilenet_v2 recipes inherit the R-101 160k DeepLab/FCN/PSPNet ADE20K configs and swap in the
backbone: the decode head reads its last stage (320 channels), the auxiliary FCN head its 96-channel
stage (in_index 2), and schedule, data and heads are otherwise the ResNet recipes'.

HEAD variants, each its recipe (single-scale mIoU, configs/mobilenet_v2/README.md):
  deeplabv3      mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512        34.08
  deeplabv3plus  mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512    34.02
  pspnet         mobilenet-v2-d8_pspnet_4xb4-160k_ade20k-512x512           29.68
  fcn            mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512              19.71

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).
- The ImageNet weights are the recipe's (mmcls://mobilenet_v2), read from pretrain/ with
  prefix 'backbone.': the mmcls:// loader strips that prefix from the classifier's keys, a plain
  file load does not, so the prefix does the same here (the classifier's conv2 and fc are unused).

    python train_mobilenetv2.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_mobilenetv2.py              # 8 GPUs x 2: total batch 16, as the recipe
    python train_mobilenetv2.py --demo                            # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/mobilenetv2_ade20k'  # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (4 x 4)
MAX_ITERS = 160_000                 # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
HEAD = 'deeplabv3'                  # 'deeplabv3', 'deeplabv3plus', 'pspnet' or 'fcn' (each its recipe)
PRETRAINED = 'auto'                 # 'auto': the mmcls MobileNetV2 ImageNet file in pretrain/; or a path

REFERENCE = dict(config='mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py', mIoU=34.08,
                 mIoU_ms=None, mem_gb=6.8, fps=39.9, total_batch=16)
HEADS = {  # HEAD -> its recipe and README single-scale mIoU
    'deeplabv3': dict(config='mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py', mIoU=34.08),
    'deeplabv3plus': dict(config='mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py',
                          mIoU=34.02),
    'pspnet': dict(config='mobilenet_v2/mobilenet-v2-d8_pspnet_4xb4-160k_ade20k-512x512.py', mIoU=29.68),
    'fcn': dict(config='mobilenet_v2/mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512.py', mIoU=19.71),
}
REFERENCES = HEADS  # each HEAD's recipe numbers (scripts.reference_for)
_PRETRAINED_FILE = 'mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth'  # mmcls://mobilenet_v2
# Output channels of MobileNetV2 at out_indices (1, 2, 4, 6): strides 4, 8, 8, 8 with the dilations below.
_STAGE_CHANNELS = (24, 32, 96, 320)


def decode_head(head, norm_cfg):
    """The R-101 recipes' decode heads, reading the last stage (320 channels)."""
    shared = dict(in_channels=_STAGE_CHANNELS[3], in_index=3, channels=512, dropout_ratio=0.1,
                  num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg, align_corners=False,
                  loss_decode=models.ce_loss(1.0))
    if head == 'deeplabv3':
        return dict(type='ASPPHead', dilations=(1, 12, 24, 36), **shared)
    if head == 'deeplabv3plus':  # low-level features from the stride-4 stage (24 channels)
        return dict(type='DepthwiseSeparableASPPHead', dilations=(1, 12, 24, 36),
                    c1_in_channels=_STAGE_CHANNELS[0], c1_channels=48, **shared)
    if head == 'pspnet':
        return dict(type='PSPHead', pool_scales=(1, 2, 3, 6), **shared)
    return dict(type='FCNHead', num_convs=2, concat_input=True, **shared)


def build_config(s):
    cli.choose('HEAD', s.HEAD, HEADS)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        backbone=dict(type='MobileNetV2', widen_factor=1., strides=(1, 2, 2, 1, 1, 1, 1),
                      dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6), norm_cfg=dict(norm_cfg),
                      init_cfg=pretrained.init_cfg(s.PRETRAINED, _PRETRAINED_FILE, prefix='backbone.')),
        decode_head=decode_head(s.HEAD, norm_cfg),
        auxiliary_head=models.fcn_aux_head(in_channels=_STAGE_CHANNELS[2]),
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
