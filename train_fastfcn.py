"""FastFCN (JPU neck) + PSPNet head, ResNet-50, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py`: 41.40 mIoU
single-scale, 42.12 multi-scale + flip (configs/fastfcn/README.md), trained on 4 GPUs x 4 images.
The Joint Pyramid Upsampling neck turns the stride-8/16/32 stages of a ResNetV1c-50 into one
stride-8 map (4 dilated separable branches, 2048 channels), which the decode head reads (in_index 2);
the neck passes stages 2-3 through, and the auxiliary FCN head reads stage 3 (in_index 1, 1024 channels).

HEAD variants, each its recipe (fastfcn/fastfcn_r50-d32_jpu_<HEAD>_4xb4-<schedule>_ade20k-512x512.py;
README mIoU single-scale / multi-scale + flip):
  HEAD   80k (the default)   160k (--max-iters 160000)
  psp    41.40 / 42.12       42.63 / 43.71
  aspp   41.88 / 42.91       43.58 / 44.92
  enc    40.88 / 42.36       42.50 / 44.21
The 160k recipes are the same configs with schedule_160k: MAX_ITERS moves the PolyLR end with it.
HEAD = 'fcn' (no ADE20K recipe, no reference number) is FCN + JPU, the FastFCN paper's own baseline
and PyTorch-Encoding's: the FCN recipe's head (two 3x3 convolutions, input concatenated) on the JPU output.
The README lists crop 512x1024 for these ADE20K rows; the configs (and this script) crop 512x512.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4): the run prints the total batch and the --accumulate that restores 16.
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k); the last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).

    python train_fastfcn.py                                   # one GPU (or the CPU)
    torchrun --nproc_per_node=8 train_fastfcn.py              # 8 GPUs x 2: total batch 16, as the recipe
    python train_fastfcn.py --demo                            # demo data on a CPU, a few minutes
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/fastfcn_ade20k'      # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (4 x 4)
MAX_ITERS = 80_000                  # optimizer steps; the PolyLR end follows (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 0.01                           # SGD, momentum 0.9, weight decay 5e-4, poly to 1e-4
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
HEAD = 'psp'                        # 'psp', 'aspp', 'enc' (each its recipe) or 'fcn' (FCN + JPU, no recipe)
PRETRAINED = 'auto'                 # 'auto': the ResNet-50-V1c ImageNet file in pretrain/; or a path

REFERENCE = dict(config='fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py', mIoU=41.40, mIoU_ms=42.12,
                 mem_gb=8.02, fps=19.21, total_batch=16)
REFERENCES = {  # each HEAD's other recipes (scripts.reference_for picks by HEAD and MAX_ITERS)
    'psp': [dict(config='fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-160k_ade20k-512x512.py', mIoU=42.63,
                 mIoU_ms=43.71, settings={'MAX_ITERS': 160_000})],
    'aspp': [dict(config='fastfcn/fastfcn_r50-d32_jpu_aspp_4xb4-80k_ade20k-512x512.py', mIoU=41.88,
                  mIoU_ms=42.91),
             dict(config='fastfcn/fastfcn_r50-d32_jpu_aspp_4xb4-160k_ade20k-512x512.py', mIoU=43.58,
                  mIoU_ms=44.92, settings={'MAX_ITERS': 160_000})],
    'enc': [dict(config='fastfcn/fastfcn_r50-d32_jpu_enc_4xb4-80k_ade20k-512x512.py', mIoU=40.88,
                 mIoU_ms=42.36),
            dict(config='fastfcn/fastfcn_r50-d32_jpu_enc_4xb4-160k_ade20k-512x512.py', mIoU=42.50,
                 mIoU_ms=44.21, settings={'MAX_ITERS': 160_000})],
}
HEADS = {'psp': 'PSPHead on the JPU output', 'aspp': 'ASPPHead on the JPU output',
         'fcn': 'FCNHead on the JPU output: FCN + JPU (no ADE20K recipe, no reference number)',
         'enc': 'EncHead (SE loss) on the JPU output and the two stages the neck passes through'}


def decode_head(head, norm_cfg):
    """The three recipes' heads: PSP and ASPP read the JPU output (2048 channels); EncNet reads it and the
    two stages the neck passes through."""
    shared = dict(channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                  align_corners=False, loss_decode=models.ce_loss(1.0))
    if head == 'psp':
        return dict(type='PSPHead', in_channels=2048, in_index=2, pool_scales=(1, 2, 3, 6), **shared)
    if head == 'aspp':
        return dict(type='ASPPHead', in_channels=2048, in_index=2, dilations=(1, 12, 24, 36), **shared)
    if head == 'fcn':  # FCN + JPU (the FastFCN paper's baseline); the FCN recipe's head on the JPU output
        return dict(type='FCNHead', in_channels=2048, in_index=2, num_convs=2, concat_input=True, **shared)
    # EncNet's context encoding (32 codewords) with its semantic-encoding loss (sigmoid BCE, weight 0.2).
    return dict(type='EncHead', in_channels=[512, 1024, 2048], in_index=(0, 1, 2), num_codes=32, use_se_loss=True,
                add_lateral=False,
                loss_se_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.2), **shared)


def build_config(s):
    cli.choose('HEAD', s.HEAD, HEADS)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, models.RESNET_V1C['r50']['pretrained']),
        # Output stride 32 ('-d32': every stage after the first has stride 2), with the recipe's dilations
        # 2 and 4 in stages 3-4 kept; stages 2-4 feed the JPU.
        backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(1, 2, 3), dilations=(1, 1, 2, 4),
                      strides=(1, 2, 2, 2), norm_cfg=dict(norm_cfg), norm_eval=False, style='pytorch',
                      contract_dilation=True),
        neck=dict(type='JPU', in_channels=(512, 1024, 2048), mid_channels=512, start_level=0, end_level=-1,
                  dilations=(1, 2, 4, 8), align_corners=False, norm_cfg=dict(norm_cfg)),
        decode_head=decode_head(s.HEAD, norm_cfg),
        auxiliary_head=models.fcn_aux_head(in_index=1),
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
