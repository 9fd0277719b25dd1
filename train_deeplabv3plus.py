"""DeepLabV3+, ResNet-50-D8, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py`: 42.72 mIoU single-scale,
43.75 multi-scale + flip (configs/deeplabv3plus/README.md), trained on 4 GPUs x 4 images.

Every ADE20K recipe of the folder (deeplabv3plus/deeplabv3plus_<BACKBONE>_4xb4-<schedule>_ade20k-512x512.py;
README mIoU single-scale / multi-scale + flip):
  BACKBONE   80k (the default)   160k (--max-iters 160000)
  r50-d8     42.72 / 43.75       43.95 / 44.93
  r101-d8    44.60 / 46.06       45.47 / 46.35
The 160k recipes differ from the 80k ones only in the schedule: MAX_ITERS moves the PolyLR end with it.
The R-101 rows of the README are mislinked: its 80k row (44.60 / 46.06, 14.1 GB, 14.16 fps on V100,
with the 80k weights) links the 160k config, so the metafile lists deeplabv3plus_r101-d8_4xb4-160k twice,
first with those 80k numbers, then with its own 45.47 / 46.35 (reference notes); tools.recipes.recipes keeps
the row whose weights are of the config's schedule.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k); the last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).

    python train_deeplabv3plus.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_deeplabv3plus.py              # 8 GPUs: total batch 16, as the recipe
    python train_deeplabv3plus.py --demo                            # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/deeplabv3plus_ade20k'        # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50-d8'                 # 'r50-d8' or 'r101-d8'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py', mIoU=42.72, mIoU_ms=43.75,
                 mem_gb=10.6, fps=21.01, total_batch=16)
REFERENCES = {  # the other recipes of the folder (scripts.reference_for picks by BACKBONE and MAX_ITERS)
    'r50-d8': [dict(config='deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py', mIoU=43.95,
                    mIoU_ms=44.93, settings={'MAX_ITERS': 160_000})],
    'r101-d8': [dict(config='deeplabv3plus/deeplabv3plus_r101-d8_4xb4-80k_ade20k-512x512.py', mIoU=44.60,
                     mIoU_ms=46.06, mem_gb=14.1, fps=14.16),
                dict(config='deeplabv3plus/deeplabv3plus_r101-d8_4xb4-160k_ade20k-512x512.py', mIoU=45.47,
                     mIoU_ms=46.35, settings={'MAX_ITERS': 160_000})],
}
BACKBONES = {'r50-d8': models.RESNET_V1C['r50'], 'r101-d8': models.RESNET_V1C['r101']}


def build_config(s):
    backbone = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, backbone['pretrained']),
        backbone=models.resnet_v1c(backbone['depth'], dilated=True),
        decode_head=dict(type='DepthwiseSeparableASPPHead', in_channels=2048, in_index=3, channels=512,
                         dilations=(1, 12, 24, 36), c1_in_channels=256, c1_channels=48, dropout_ratio=0.1,
                         num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg, align_corners=False,
                         loss_decode=models.ce_loss(1.0)),
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
