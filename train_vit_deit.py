"""ViT / DeiT-S/16 + UPerNet on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py`: 42.96 mIoU
single-scale, 43.79 multi-scale + flip (configs/vit/README.md), trained on 8 GPUs x 2 images.
A plain ViT (12 layers, stride 16 throughout); UPerNet reads layers 3, 6, 9 and 12, all at 1/16
(no neck), plus an auxiliary FCN head on the last. AdamW, 1500 warmup steps, no weight decay on
position embedding, class token and norms.

BACKBONE variants, each its recipes (vit/vit_<recipe>_upernet_8xb2-<schedule>_ade20k-512x512.py;
single-scale / multi-scale + flip mIoU, the wheel's metafile):
  BACKBONE        recipe             80k (the default)   160k (--max-iters 160000)
  deit-s          deit-s16           42.96 / 43.79       42.87 / 43.79  (that file trains 80k: below)
  deit-b          deit-b16           45.24 / 46.73       45.36 / 47.16
  vit-b           vit-b16_mln        47.71 / 49.51       46.75 / 48.46
  deit-s-mln      deit-s16_mln       -                   43.82 / 45.07
  deit-b-mln      deit-b16_mln       -                   45.46 / 47.16
  deit-s-ln-mln   deit-s16-ln_mln    -                   43.52 / 45.01
  deit-b-ln-mln   deit-b16-ln_mln    -                   45.37 / 47.23
  vit-b-ln        vit-b16-ln_mln     -                   47.73 / 49.95  (vit-b always has the neck)
_mln: a MultiLevelNeck resamples the four 1/16 maps to 1/4, 1/8, 1/16 and 1/32 (as a CNN's) before
UPerNet. -ln: the backbone applies its final LayerNorm to the last layer's output (final_norm=True),
with the pretrained file's final norm. vit-b-ln has stochastic depth 0.1 (vit-b: 0); the DeiT
variants all have 0.1. The deit-*-mln, -ln-mln and vit-b-ln recipes exist at 160k only.

MMSegmentation has no ViT-Adapter (not in 1.2.2's configs/ or projects/); this is the plain-ViT
UPerNet of configs/vit. Note that `vit_deit-s16_upernet_8xb2-160k_ade20k-512x512.py` is the same
80k run despite its name: it inherits the 80k file (reference §4.3; resolved, its train_cfg.max_iters
and PolyLR end are 80000). So its command is the default one, MAX_ITERS 80000, and a default run
quotes the 80k file's numbers; --max-iters 160000 trains what its name says (no published result).

Pretrained weights: DeiT's and timm's ImageNet files, converted to mmseg's key layout (mmseg's
tools/model_converters/vit2mmseg.py is not in the wheel; this repository has its equivalent):
    python -m common.pretrained fetch deit_small_patch16_224-cd65a155.pth
    python -m common.convert_vit pretrain/deit_small_patch16_224-cd65a155.pth
    # -> pretrain/deit_small_patch16_224-cd65a155_mmseg.pth
  deit-b (and deit-b-*): the same with deit_base_patch16_224-b5f2ef4d.pth; vit-b and vit-b-ln:
  jx_vit_base_p16_224-80ecf9dd.pth (the recipe calls its converted file pretrain/vit_base_patch16_224.pth).
As in mmseg, the backbone (patch_bias=False, final_norm=False but in the -ln variants) leaves the
file's patch-embedding bias (and final norm) unused; the 14x14 position grid is resized to the
crop's on loading.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 8000, 16000 at 160k); the last 3
  checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best).

    python train_vit_deit.py                              # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_vit_deit.py         # 8 GPUs x 2: the recipe's total batch
    python train_vit_deit.py --demo                       # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/vit_deit_ade20k'     # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); ViT grid and resize scale follow
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 80_000                  # optimizer steps; warmup and PolyLR end follow (160_000: the 160k recipes)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 6e-5                           # AdamW, weight decay 0.01 (none on pos/cls/norms); 1500 warmup steps
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'deit-s'                 # 'deit-s', 'deit-b', 'vit-b' (patch 16); -mln, -ln-mln, vit-b-ln: docstring
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's converted ImageNet file in pretrain/; or a path

REFERENCE = dict(config='vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py', mIoU=42.96, mIoU_ms=43.79,
                 mem_gb=4.68, fps=29.85, total_batch=16)
_160K = {'MAX_ITERS': 160_000}
REFERENCES = {  # the variants' own recipes (scripts.reference_for picks by BACKBONE and MAX_ITERS)
    # Named 160k, trains 80k (docstring): the default command; the default run quotes the 80k file's numbers.
    'deit-s': dict(config='vit/vit_deit-s16_upernet_8xb2-160k_ade20k-512x512.py', mIoU=42.87, mIoU_ms=43.79),
    'deit-b': [dict(config='vit/vit_deit-b16_upernet_8xb2-80k_ade20k-512x512.py', mIoU=45.24, mIoU_ms=46.73),
               dict(config='vit/vit_deit-b16_upernet_8xb2-160k_ade20k-512x512.py', mIoU=45.36, mIoU_ms=47.16,
                    settings=_160K)],
    'vit-b': [dict(config='vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py', mIoU=47.71, mIoU_ms=49.51),
              dict(config='vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py', mIoU=46.75, mIoU_ms=48.46,
                   settings=_160K)],
    'deit-s-mln': dict(config='vit/vit_deit-s16_mln_upernet_8xb2-160k_ade20k-512x512.py', mIoU=43.82,
                       mIoU_ms=45.07, settings=_160K),
    'deit-b-mln': dict(config='vit/vit_deit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py', mIoU=45.46,
                       mIoU_ms=47.16, settings=_160K),
    'deit-s-ln-mln': dict(config='vit/vit_deit-s16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py', mIoU=43.52,
                          mIoU_ms=45.01, settings=_160K),
    'deit-b-ln-mln': dict(config='vit/vit_deit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py', mIoU=45.37,
                          mIoU_ms=47.23, settings=_160K),
    'vit-b-ln': dict(config='vit/vit_vit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py', mIoU=47.73,
                     mIoU_ms=49.95, mem_gb=9.21, fps=6.82, settings=_160K),
}
# Widths, stochastic depth, neck and final norm of the configs/vit recipes; files made by common.convert_vit.
_DEIT_S = dict(embed_dims=384, num_heads=6, drop_path_rate=0.1, pretrained='deit_small_patch16_224-cd65a155_mmseg.pth')
_DEIT_B = dict(embed_dims=768, num_heads=12, drop_path_rate=0.1, pretrained='deit_base_patch16_224-b5f2ef4d_mmseg.pth')
_VIT_B = dict(embed_dims=768, num_heads=12, pretrained='jx_vit_base_p16_224-80ecf9dd_mmseg.pth')
BACKBONES = {
    'deit-s': dict(_DEIT_S, neck=False, final_norm=False),
    'deit-b': dict(_DEIT_B, neck=False, final_norm=False),
    'vit-b': dict(_VIT_B, drop_path_rate=0.0, neck=True, final_norm=False),
    'deit-s-mln': dict(_DEIT_S, neck=True, final_norm=False),
    'deit-b-mln': dict(_DEIT_B, neck=True, final_norm=False),
    'deit-s-ln-mln': dict(_DEIT_S, neck=True, final_norm=True),
    'deit-b-ln-mln': dict(_DEIT_B, neck=True, final_norm=True),
    'vit-b-ln': dict(_VIT_B, drop_path_rate=0.1, neck=True, final_norm=True),
}


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    width = variant['embed_dims']
    crop = tuple(s.CROP_SIZE)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    # The MultiLevelNeck resamples the four 1/16 maps to 1/4, 1/8, 1/16 and 1/32 (as a CNN's).
    neck = (dict(type='MultiLevelNeck', in_channels=[width] * 4, out_channels=width, scales=[4, 2, 1, 0.5])
            if variant['neck'] else None)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(crop),
        pretrained=pretrained.resolve(s.PRETRAINED, variant['pretrained']),
        backbone=dict(type='VisionTransformer', img_size=crop, patch_size=16, in_channels=3, embed_dims=width,
                      num_layers=12, num_heads=variant['num_heads'], mlp_ratio=4, out_indices=(2, 5, 8, 11),
                      qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=variant['drop_path_rate'],
                      with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6), act_cfg=dict(type='GELU'),
                      norm_eval=False, interpolate_mode='bicubic',
                      **(dict(final_norm=True) if variant['final_norm'] else {})),  # else ViT's default False
        neck=neck,
        decode_head=dict(type='UPerHead', in_channels=[width] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(in_channels=width, in_index=3),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, crop, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedules.adamw_poly(lr=s.LR, weight_decay=0.01, warmup_iters=1500, power=1.0, eta_min=0.0,
                                       paramwise_cfg=schedules.transformer_paramwise(
                                           ('pos_embed', 'cls_token', 'norm')),
                                       **schedules.steps(s)),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
