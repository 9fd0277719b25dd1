"""UPerNet, Swin-T, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`:
44.41 mIoU single-scale, 45.79 multi-scale + flip (configs/swin/README.md), trained on 8 GPUs x 2 images.

BACKBONE variants, each its recipe (swin/<recipe>_upernet_8xb2-160k_ade20k-512x512.py; README mIoU ss/ms):
  swin-t            swin-tiny-patch4-window7-in1k-pre                 44.41 / 45.79
  swin-s            swin-small-patch4-window7-in1k-pre                47.72 / 49.24
  swin-b            swin-base-patch4-window7-in1k-pre                 47.99 / 49.57
  swin-b-in22k      swin-base-patch4-window7-in22k-pre                50.13 / 51.90 (metafile)
  swin-b-384        swin-base-patch4-window12-in1k-384x384-pre        48.35 / 49.65 (metafile)
  swin-b-384-in22k  swin-base-patch4-window12-in22k-384x384-pre       50.76 / 52.4
  swin-l-in22k      swin-large-patch4-window7-in22k-pre               no published result
  swin-l-384-in22k  swin-large-patch4-window12-in22k-384x384-pre      no published result
Every variant keeps the 512 crop, the schedule and the heads; only the backbone and its weights change.
The pretrained files are mmseg's converted Swin weights (download.openmmlab.com); no conversion needed.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one.

    python train_swin.py                                  # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_swin.py             # 8 GPUs x 2: the recipe's total batch
    python train_swin.py --demo                           # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/swin_ade20k'         # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 6e-5                           # AdamW, weight decay 0.01 (none on norms, position tables); 1500 warmup steps
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'swin-t'                 # 'swin-t', 'swin-s', 'swin-b', 'swin-b-in22k', 'swin-b-384', ... (see above)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', mIoU=44.41,
                 mIoU_ms=45.79, mem_gb=5.02, fps=21.06, total_batch=16)
REFERENCES = {  # the variants' own recipes (scripts.reference_for)
    'swin-s': dict(config='swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
                   mIoU=47.72, mIoU_ms=49.24),
    'swin-b': dict(config='swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
                   mIoU=47.99, mIoU_ms=49.57),
    'swin-b-in22k': dict(config='swin/swin-base-patch4-window7-in22k-pre_upernet_8xb2-160k_ade20k-512x512.py',
                         mIoU=50.13, mIoU_ms=51.90),
    'swin-b-384': dict(config='swin/swin-base-patch4-window12-in1k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py',
                       mIoU=48.35, mIoU_ms=49.65),
    'swin-b-384-in22k': dict(
        config='swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py',
        mIoU=50.76, mIoU_ms=52.4),
    # No published result for the two Swin-L recipes (their README has no rows for them).
    'swin-l-in22k': dict(config='swin/swin-large-patch4-window7-in22k-pre_upernet_8xb2-160k_ade20k-512x512.py',
                         mIoU=None, mIoU_ms=None),
    'swin-l-384-in22k': dict(
        config='swin/swin-large-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py',
        mIoU=None, mIoU_ms=None),
}
# Widths, depths, heads, window and pretraining resolution of each recipe's SwinTransformer.
_TINY = dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, pretrain_img_size=224)
_SMALL = dict(_TINY, depths=[2, 2, 18, 2])
_BASE = dict(_SMALL, embed_dims=128, num_heads=[4, 8, 16, 32])
_BASE_384 = dict(_BASE, window_size=12, pretrain_img_size=384)
_LARGE = dict(_SMALL, embed_dims=192, num_heads=[6, 12, 24, 48])
_LARGE_384 = dict(_LARGE, window_size=12, pretrain_img_size=384)
BACKBONES = {
    'swin-t': dict(_TINY, pretrained='swin_tiny_patch4_window7_224_20220317-1cdeb081.pth',
                   recipe='swin-tiny-patch4-window7-in1k-pre'),
    'swin-s': dict(_SMALL, pretrained='swin_small_patch4_window7_224_20220317-7ba6d6dd.pth',
                   recipe='swin-small-patch4-window7-in1k-pre'),
    'swin-b': dict(_BASE, pretrained='swin_base_patch4_window7_224_20220317-e9b98025.pth',
                   recipe='swin-base-patch4-window7-in1k-pre'),
    'swin-b-in22k': dict(_BASE, pretrained='swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth',
                         recipe='swin-base-patch4-window7-in22k-pre'),
    'swin-b-384': dict(_BASE_384, pretrained='swin_base_patch4_window12_384_20220317-55b0104a.pth',
                       recipe='swin-base-patch4-window12-in1k-384x384-pre'),
    'swin-b-384-in22k': dict(_BASE_384, pretrained='swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth',
                             recipe='swin-base-patch4-window12-in22k-384x384-pre'),
    'swin-l-in22k': dict(_LARGE, pretrained='swin_large_patch4_window7_224_22k_20220412-aeecf2aa.pth',
                         recipe='swin-large-patch4-window7-in22k-pre'),
    'swin-l-384-in22k': dict(_LARGE_384, pretrained='swin_large_patch4_window12_384_22k_20220412-6580f57d.pth',
                             recipe='swin-large-patch4-window12-in22k-384x384-pre'),
}


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    width = variant['embed_dims']
    stage_channels = [width, 2 * width, 4 * width, 8 * width]
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=None,
        backbone=dict(type='SwinTransformer', pretrain_img_size=variant['pretrain_img_size'], embed_dims=width,
                      patch_size=4, window_size=variant['window_size'], mlp_ratio=4, depths=variant['depths'],
                      num_heads=variant['num_heads'], strides=(4, 2, 2, 2), out_indices=(0, 1, 2, 3),
                      qkv_bias=True, qk_scale=None, patch_norm=True, drop_rate=0., attn_drop_rate=0.,
                      drop_path_rate=0.3, use_abs_pos_embed=False, act_cfg=dict(type='GELU'),
                      norm_cfg=dict(type='LN', requires_grad=True),
                      init_cfg=pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])),
        decode_head=dict(type='UPerHead', in_channels=stage_channels, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(in_channels=stage_channels[2]),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedules.adamw_poly(lr=s.LR, weight_decay=0.01, warmup_iters=1500, power=1.0, eta_min=0.0,
                                       paramwise_cfg=schedules.transformer_paramwise(
                                           ('absolute_pos_embed', 'relative_position_bias_table', 'norm')),
                                       **schedules.steps(s)),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
