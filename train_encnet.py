"""EncNet (context encoding + SE loss), ResNet-50-D8, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `encnet/encnet_r50-d8_4xb4-80k_ade20k-512x512.py`: 39.53 mIoU single-scale,
41.17 multi-scale + flip (configs/encnet/README.md), trained on 4 GPUs x 4 images.
The encoding layer learns 32 codewords over the stage-4 features and rescales the channels by what
it encodes; its semantic-encoding (SE) loss asks the same encoding to predict which classes the image
holds (binary cross-entropy, weight 0.2), beside the pixel loss (1.0) and the auxiliary head (0.4).

Every ADE20K recipe of the folder (encnet/encnet_<BACKBONE>_4xb4-<schedule>_ade20k-512x512.py;
README mIoU single-scale / multi-scale + flip):
  BACKBONE   80k (the default)      160k (--max-iters 160000)
  r50-d8     39.53 / 41.17          40.10 / 41.71
  r101-d8    42.11 / 43.61          42.61 / 44.01
  r50s-d8    no published result    (no recipe)
The 160k recipes differ from the 80k ones only in the schedule: MAX_ITERS moves the PolyLR end with it.
'r50s-d8' (encnet_r50s-d8_4xb4-80k) widens the deep stem to 128 channels (stem_channels=128) and
keeps the recipe's resnet50_v1c file, whose stem is 64 wide: mmengine skips the tensors whose shapes
differ (the three stem convolutions and their norms, the first block's conv1 and downsample), with a
size-mismatch warning in the log, so those start random, as in the upstream recipe.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k); the last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).

    python train_encnet.py                                 # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_encnet.py            # 8 GPUs x 2: total batch 16, as the recipe
    python train_encnet.py --demo                          # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/encnet_ade20k'       # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50-d8'                 # 'r50-d8', 'r101-d8' or 'r50s-d8' (128-channel stem)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='encnet/encnet_r50-d8_4xb4-80k_ade20k-512x512.py', mIoU=39.53, mIoU_ms=41.17,
                 mem_gb=10.1, fps=22.81, total_batch=16)
REFERENCES = {  # the other recipes of the folder (scripts.reference_for picks by BACKBONE and MAX_ITERS)
    'r50-d8': [dict(config='encnet/encnet_r50-d8_4xb4-160k_ade20k-512x512.py', mIoU=40.10, mIoU_ms=41.71,
                    settings={'MAX_ITERS': 160_000})],
    'r101-d8': [dict(config='encnet/encnet_r101-d8_4xb4-80k_ade20k-512x512.py', mIoU=42.11, mIoU_ms=43.61,
                     mem_gb=13.6, fps=14.87),
                dict(config='encnet/encnet_r101-d8_4xb4-160k_ade20k-512x512.py', mIoU=42.61, mIoU_ms=44.01,
                     settings={'MAX_ITERS': 160_000})],
    'r50s-d8': dict(config='encnet/encnet_r50s-d8_4xb4-80k_ade20k-512x512.py', mIoU=None, mIoU_ms=None),
}
BACKBONES = {
    'r50-d8': models.RESNET_V1C['r50'],
    'r101-d8': models.RESNET_V1C['r101'],
    'r50s-d8': dict(models.RESNET_V1C['r50'], stem_channels=128),  # the recipe keeps resnet50_v1c (above)
}


def build_config(s):
    backbone = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    resnet = models.resnet_v1c(backbone['depth'], dilated=True)
    if 'stem_channels' in backbone:  # r50s only; ResNetV1c's default stem is 64 wide
        resnet['stem_channels'] = backbone['stem_channels']
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, backbone['pretrained']),
        backbone=resnet,
        # Stages 2-4 in (512, 1024, 2048 channels); without lateral connections only stage 4 is used:
        # a 3x3 bottleneck to 512, then the encoding. The SE loss: sigmoid cross-entropy on the classes present.
        decode_head=dict(type='EncHead', in_channels=[512, 1024, 2048], in_index=(1, 2, 3), channels=512,
                         num_codes=32, use_se_loss=True, add_lateral=False, dropout_ratio=0.1,
                         num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg, align_corners=False,
                         loss_decode=models.ce_loss(1.0),
                         loss_se_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.2)),
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
