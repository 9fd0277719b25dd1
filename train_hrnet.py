"""FCN, HRNetV2p-W18-Small, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `hrnet/fcn_hr18s_4xb4-80k_ade20k-512x512.py`: 31.38 mIoU single-scale,
32.45 multi-scale + flip (configs/hrnet/README.md), trained on 4 GPUs x 4 images.
HRNetV2 keeps a 1/4-resolution branch from the stem to the end and adds 1/8, 1/16 and 1/32 branches
that exchange features after every module. The FCN head resizes the four branches to 1/4 and
concatenates them (270 channels for W18, 720 for W48), then applies one 1x1 conv of that width and
the classifier. It has no dropout and there is no auxiliary head.

Every ADE20K recipe of the folder (hrnet/fcn_<BACKBONE>_4xb4-<schedule>_ade20k-512x512.py;
README mIoU single-scale / multi-scale + flip):
  BACKBONE              80k (the default)   160k (--max-iters 160000)
  hr18s (W18-Small)     31.38 / 32.45       33.07 / 34.56
  hr18 (W18)            36.27 / 37.28       36.79 / 38.58
  hr48 (W48)            41.90 / 43.27       42.02 / 43.86
W18-Small has 2 blocks per branch and 3 and 2 modules in stages 3 and 4; W18 and W48 have 4 blocks,
and 4 and 3 modules. The 160k recipes differ from the 80k ones only in the schedule: MAX_ITERS moves
the PolyLR end with it.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k). The last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).

    python train_hrnet.py                                 # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_hrnet.py            # 8 GPUs x 2: total batch 16, as the recipe
    python train_hrnet.py --demo                          # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/hrnet_ade20k'   # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'hr18s'                  # 'hr18s' (HRNetV2p-W18-Small), 'hr18' (W18) or 'hr48' (W48)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='hrnet/fcn_hr18s_4xb4-80k_ade20k-512x512.py', mIoU=31.38, mIoU_ms=32.45,
                 mem_gb=3.8, fps=38.66, total_batch=16)
REFERENCES = {  # the other recipes of the folder (scripts.reference_for picks by BACKBONE and MAX_ITERS)
    'hr18s': [dict(config='hrnet/fcn_hr18s_4xb4-160k_ade20k-512x512.py', mIoU=33.07, mIoU_ms=34.56,
                   settings={'MAX_ITERS': 160_000})],
    'hr18': [dict(config='hrnet/fcn_hr18_4xb4-80k_ade20k-512x512.py', mIoU=36.27, mIoU_ms=37.28,
                  mem_gb=4.9, fps=22.57),
             dict(config='hrnet/fcn_hr18_4xb4-160k_ade20k-512x512.py', mIoU=36.79, mIoU_ms=38.58,
                  settings={'MAX_ITERS': 160_000})],
    'hr48': [dict(config='hrnet/fcn_hr48_4xb4-80k_ade20k-512x512.py', mIoU=41.90, mIoU_ms=43.27,
                  mem_gb=8.2, fps=21.23),
             dict(config='hrnet/fcn_hr48_4xb4-160k_ade20k-512x512.py', mIoU=42.02, mIoU_ms=43.86,
                  settings={'MAX_ITERS': 160_000})],
}
BACKBONES = {name: models.HRNET_V2[name] for name in ('hr18s', 'hr18', 'hr48')}


def build_config(s):
    backbone = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    widths = list(backbone['widths'])
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, backbone['pretrained']),
        backbone=models.hrnet(backbone['widths'], backbone['blocks'], backbone['modules'], norm_cfg),
        # All four branches, resized to the 1/4 one and concatenated; one 1x1 conv as wide as the
        # concatenation, no dropout (-1).
        decode_head=dict(type='FCNHead', in_channels=widths, in_index=(0, 1, 2, 3), input_transform='resize_concat',
                         channels=sum(widths), kernel_size=1, num_convs=1, concat_input=False, dropout_ratio=-1,
                         num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg, align_corners=False,
                         loss_decode=models.ce_loss(1.0)),
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
