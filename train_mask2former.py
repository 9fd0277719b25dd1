"""Mask2Former, ResNet-50, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py`: 47.87 mIoU
single-scale (configs/mask2former/README.md; no multi-scale result), trained on 8 GPUs x 2 images.
Needs mmdet (pixel decoder, losses, Hungarian matcher) and mmcv's compiled
MultiScaleDeformableAttention (CUDA kernel on a GPU; it has no bfloat16 version).

BACKBONE variants, each its recipe:
  r101         mask2former_r101_8xb2-160k_ade20k-512x512                          48.60
  swin-t       mask2former_swin-t_8xb2-160k_ade20k-512x512                        48.66
  swin-s       mask2former_swin-s_8xb2-160k_ade20k-512x512                        51.24
  swin-b-in1k  mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640       52.44 (recipe crop 640)
  swin-b       mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640      53.90 (recipe crop 640)
  swin-l       mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640      56.01 (recipe crop 640)

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 5000); the last 3 checkpoints are kept,
  plus the best-mIoU one (as the recipe).
- CROP_SIZE stays 512 for swin-b-in1k/swin-b/swin-l, whose recipes train at 640: pass --crop-size 640
  for those.
- Under bf16 (the GPU default) the deformable attention of the pixel decoder runs in fp32 (its
  kernel has no bf16 version).

    python train_mask2former.py                           # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_mask2former.py      # 8 GPUs x 2: the recipe's total batch
    python train_mask2former.py --demo                    # demo data on a CPU
"""
from common import ade20k, cli, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/mask2former_ade20k'  # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize choices follow
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 1e-4                           # AdamW, weight decay 0.05; backbone x0.1; grad clip 0.01
PRECISION = 'auto'                  # 'auto': bf16 on a GPU (deformable attention in fp32), fp32 on a CPU; or bf16/fp16/fp32
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50'                    # 'r50', 'r101', 'swin-t', 'swin-s', 'swin-b-in1k', 'swin-b', 'swin-l'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path
NUM_QUERIES = 100                   # mask queries

REFERENCE = dict(config='mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', mIoU=47.87, mIoU_ms=None,
                 mem_gb=3.31, fps=26.59, total_batch=16)
REFERENCES = {  # the variants' own recipes (scripts.reference_for); none reports multi-scale
    'r101': dict(config='mask2former/mask2former_r101_8xb2-160k_ade20k-512x512.py', mIoU=48.60, mIoU_ms=None),
    'swin-t': dict(config='mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py', mIoU=48.66, mIoU_ms=None,
                   fps=23.82),
    'swin-s': dict(config='mask2former/mask2former_swin-s_8xb2-160k_ade20k-512x512.py', mIoU=51.24, mIoU_ms=None),
    'swin-b-in1k': dict(config='mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py',
                        mIoU=52.44, mIoU_ms=None, crop_size=(640, 640)),
    'swin-b': dict(config='mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py',
                   mIoU=53.90, mIoU_ms=None, crop_size=(640, 640)),
    'swin-l': dict(config='mask2former/mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py',
                   mIoU=56.01, mIoU_ms=None, mem_gb=8.86, fps=8.81, crop_size=(640, 640)),
}
_SWIN = dict(pretrain_img_size=224, embed_dims=96, num_heads=[3, 6, 12, 24], window_size=7)
_SWIN_384 = dict(pretrain_img_size=384, embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                 window_size=12)
BACKBONES = {
    'r50': dict(depth=50, pretrained='resnet50-0676ba61.pth'),
    'r101': dict(depth=101, pretrained='resnet101-63fe2227.pth'),
    'swin-t': dict(_SWIN, depths=[2, 2, 6, 2], pretrained='swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'),
    'swin-s': dict(_SWIN, depths=[2, 2, 18, 2], pretrained='swin_small_patch4_window7_224_20220317-7ba6d6dd.pth'),
    'swin-b-in1k': dict(_SWIN_384, pretrained='swin_base_patch4_window12_384_20220317-55b0104a.pth'),
    'swin-b': dict(_SWIN_384, pretrained='swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'),
    'swin-l': dict(_SWIN_384, embed_dims=192, num_heads=[6, 12, 24, 48],
                   pretrained='swin_large_patch4_window12_384_22k_20220412-6580f57d.pth'),
}


def backbone_dict(name, variant, init_cfg):
    if name.startswith('r'):
        # torchvision's ResNet (not V1c), BN affine frozen, as the recipe.
        return dict(type='ResNet', depth=variant['depth'], deep_stem=False, num_stages=4, out_indices=(0, 1, 2, 3),
                    frozen_stages=-1, norm_cfg=dict(type='SyncBN', requires_grad=False), style='pytorch',
                    init_cfg=init_cfg)
    swin = dict(type='SwinTransformer', embed_dims=variant['embed_dims'], depths=variant['depths'],
                num_heads=variant['num_heads'], window_size=variant['window_size'], mlp_ratio=4, qkv_bias=True,
                qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.3, patch_norm=True,
                out_indices=(0, 1, 2, 3), with_cp=False, frozen_stages=-1, init_cfg=init_cfg)
    if variant['pretrain_img_size'] != 224:
        swin['pretrain_img_size'] = variant['pretrain_img_size']
    return swin


def paramwise(name, variant):
    """Backbone at 0.1x LR; no decay on queries and level embeddings; for Swin, also none on its
    norms and position tables (the recipes list every block's norm)."""
    keys = {'backbone': dict(lr_mult=0.1, decay_mult=1.0)}
    if name.startswith('swin'):
        frozen_decay = dict(lr_mult=0.1, decay_mult=0.0)
        depths = variant['depths']
        keys.update({k: dict(frozen_decay) for k in ('backbone.patch_embed.norm', 'backbone.norm',
                                                     'absolute_pos_embed', 'relative_position_bias_table')})
    keys.update({k: dict(lr_mult=1.0, decay_mult=0.0) for k in ('query_embed', 'query_feat', 'level_embed')})
    if name.startswith('swin'):
        keys.update({f'backbone.stages.{stage}.blocks.{block}.norm': dict(frozen_decay)
                     for stage, blocks in enumerate(depths) for block in range(blocks)})
        keys.update({f'backbone.stages.{stage}.downsample.norm': dict(frozen_decay)
                     for stage in range(len(depths) - 1)})
    return dict(custom_keys=keys, norm_decay_mult=0.0)


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    init_cfg = pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])
    width = variant.get('embed_dims')
    in_channels = [256, 512, 1024, 2048] if 'depth' in variant else [width, 2 * width, 4 * width, 8 * width]
    # The 512 recipes also pad test images to a multiple of 32; the 640 Swin-B/L ones do not.
    test_pad = {} if s.BACKBONE in ('swin-b-in1k', 'swin-b', 'swin-l') else dict(test_cfg=dict(size_divisor=32))
    num_classes = ade20k.NUM_CLASSES
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE, **test_pad),
        backbone=backbone_dict(s.BACKBONE, variant, init_cfg),
        decode_head=dict(
            type='Mask2FormerHead', in_channels=in_channels, strides=[4, 8, 16, 32], feat_channels=256,
            out_channels=256, num_classes=num_classes, num_queries=s.NUM_QUERIES, num_transformer_feat_level=3,
            align_corners=False,
            pixel_decoder=dict(
                type='mmdet.MSDeformAttnPixelDecoder', num_outs=3, norm_cfg=dict(type='GN', num_groups=32),
                act_cfg=dict(type='ReLU'),
                encoder=dict(num_layers=6, layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8, num_levels=3, num_points=4, im2col_step=64,
                                       dropout=0.0, batch_first=True, norm_cfg=None, init_cfg=None),
                    ffn_cfg=dict(embed_dims=256, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type='ReLU', inplace=True))),
                    init_cfg=None),
                positional_encoding=dict(num_feats=128, normalize=True),
                init_cfg=None),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=128, normalize=True),
            transformer_decoder=dict(
                return_intermediate=True, num_layers=9,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0,
                                       dropout_layer=None, batch_first=True),
                    cross_attn_cfg=dict(embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0,
                                        dropout_layer=None, batch_first=True),
                    ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2,
                                 act_cfg=dict(type='ReLU', inplace=True), ffn_drop=0.0, dropout_layer=None,
                                 add_identity=True)),
                init_cfg=None),
            loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                          class_weight=[1.0] * num_classes + [0.1]),
            loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
            loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                           naive_dice=True, eps=1.0, loss_weight=5.0),
            train_cfg=dict(
                num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75,
                assigner=dict(type='mmdet.HungarianAssigner', match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
                sampler=dict(type='mmdet.MaskPseudoSampler'))),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    train_pipeline = ade20k.train_pipeline(s.CROP_SIZE, resize=ade20k.shortest_edge_choice_resize(s.CROP_SIZE))
    return dict(model=model,
                custom_imports=dict(imports='mmdet.models', allow_failed_imports=False),
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS,
                                     train_pipeline_=train_pipeline),
                **schedules.adamw_poly(lr=s.LR, weight_decay=0.05, eps=1e-8, warmup_iters=0, power=0.9, eta_min=0,
                                       clip_grad=dict(max_norm=0.01, norm_type=2),
                                       paramwise_cfg=paramwise(s.BACKBONE, variant), **schedules.steps(s)),
                auto_scale_lr=dict(enable=False, base_batch_size=16),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
