"""MaskFormer, ResNet-50 (output stride 32), on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py`: 44.29 mIoU
single-scale (configs/maskformer/README.md; no multi-scale result), trained on 8 GPUs x 2 images.
The README's ADE20K table has its fps and device columns swapped: its R-50 row reads 42.20 fps on
an A100. Needs mmdet (pixel decoder, Hungarian matcher, focal and dice losses); on a GPU mmdet's
FocalLoss runs mmcv's compiled sigmoid_focal_loss.

BACKBONE variants, each its recipe (the README notes MaskFormer's results vary from run to run:
R-101 44.7-46.0, Swin-S 49.0-49.8):
  r101    maskformer_r101-d32_8xb2-160k_ade20k-512x512            45.11
  swin-t  maskformer_swin-t_upernet_8xb2-160k_ade20k-512x512      46.69
  swin-s  maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512      49.36
The Swin recipes also change the optimizer: AdamW 6e-5, weight decay 0.01, backbone at full LR,
no decay on norms, position tables and queries, and 1500 warmup steps before a linear decay.
LR = None takes the BACKBONE's recipe LR.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).
- No custom_imports, as the recipe: mmseg's MaskFormerHead imports mmdet's heads, which registers
  the `mmdet.*` types the config names, and the preflight check stops with a clear error if mmdet
  is missing.

    python train_maskformer.py                            # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_maskformer.py       # 8 GPUs x 2: the recipe's total batch
    python train_maskformer.py --demo                     # demo data on a CPU
"""
from common import ade20k, cli, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/maskformer_ade20k'   # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup (Swin) and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR: float | None = None             # AdamW peak LR; None: the BACKBONE's recipe (ResNet 1e-4, Swin 6e-5)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50'                    # 'r50', 'r101', 'swin-t', 'swin-s'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path
NUM_QUERIES = 100                   # mask queries

REFERENCE = dict(config='maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py', mIoU=44.29, mIoU_ms=None,
                 mem_gb=3.29, fps=42.20, total_batch=16)
REFERENCES = {  # the variants' own recipes (scripts.reference_for); none reports multi-scale
    'r101': dict(config='maskformer/maskformer_r101-d32_8xb2-160k_ade20k-512x512.py', mIoU=45.11, mIoU_ms=None),
    'swin-t': dict(config='maskformer/maskformer_swin-t_upernet_8xb2-160k_ade20k-512x512.py', mIoU=46.69,
                   mIoU_ms=None),
    'swin-s': dict(config='maskformer/maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512.py', mIoU=49.36,
                   mIoU_ms=None),
}
# Optimizer and schedule of each recipe family: the R-50 file, and the swin-t/swin-s files.
_RESNET_OPTIM = dict(lr=1e-4, weight_decay=1e-4, warmup_iters=0, power=0.9)
_SWIN_OPTIM = dict(lr=6e-5, weight_decay=0.01, warmup_iters=1500, power=1.0)
BACKBONES = {
    'r50': dict(depth=50, optim=_RESNET_OPTIM, pretrained='resnet50-0676ba61.pth'),
    'r101': dict(depth=101, optim=_RESNET_OPTIM, pretrained='resnet101-63fe2227.pth'),
    'swin-t': dict(depths=[2, 2, 6, 2], optim=_SWIN_OPTIM,
                   pretrained='swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'),
    'swin-s': dict(depths=[2, 2, 18, 2], optim=_SWIN_OPTIM,
                   pretrained='swin_small_patch4_window7_224_20220317-7ba6d6dd.pth'),
}


def backbone_dict(variant, init_cfg):
    if 'depth' in variant:
        # torchvision's ResNet (not V1c), stride 32, BN statistics frozen (norm_eval), as the recipe.
        return dict(type='ResNet', depth=variant['depth'], num_stages=4, out_indices=(0, 1, 2, 3),
                    dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2), norm_cfg=dict(type='SyncBN', requires_grad=True),
                    norm_eval=True, style='pytorch', contract_dilation=True, init_cfg=init_cfg)
    return dict(type='SwinTransformer', pretrain_img_size=224, embed_dims=96, patch_size=4, window_size=7,
                mlp_ratio=4, depths=variant['depths'], num_heads=[3, 6, 12, 24], strides=(4, 2, 2, 2),
                out_indices=(0, 1, 2, 3), qkv_bias=True, qk_scale=None, patch_norm=True, drop_rate=0.,
                attn_drop_rate=0., drop_path_rate=0.3, use_abs_pos_embed=False, act_cfg=dict(type='GELU'),
                norm_cfg=dict(type='LN', requires_grad=True), init_cfg=init_cfg)


def paramwise(variant):
    """ResNet: backbone at 0.1x LR. Swin: backbone at 1x, no weight decay on its norms (the recipes
    list every block's), its relative position tables and the queries."""
    if 'depth' in variant:
        return dict(custom_keys={'backbone': dict(lr_mult=0.1)})
    frozen_decay = dict(lr_mult=1.0, decay_mult=0.0)
    depths = variant['depths']
    keys = {'backbone': dict(lr_mult=1.0), 'backbone.patch_embed.norm': dict(frozen_decay),
            'backbone.norm': dict(frozen_decay), 'relative_position_bias_table': dict(frozen_decay),
            'query_embed': dict(decay_mult=0.0)}
    keys.update({f'backbone.stages.{stage}.blocks.{block}.norm': dict(frozen_decay)
                 for stage, blocks in enumerate(depths) for block in range(blocks)})
    keys.update({f'backbone.stages.{stage}.downsample.norm': dict(frozen_decay) for stage in range(len(depths) - 1)})
    return dict(custom_keys=keys)


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    init_cfg = pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])
    optim = variant['optim']
    lr = optim['lr'] if s.LR is None else s.LR
    in_channels = [256, 512, 1024, 2048] if 'depth' in variant else [96, 192, 384, 768]
    num_classes = ade20k.NUM_CLASSES
    attn = dict(embed_dims=256, num_heads=8, attn_drop=0.1, proj_drop=0.1, dropout_layer=None, batch_first=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        backbone=backbone_dict(variant, init_cfg),
        decode_head=dict(
            type='MaskFormerHead', in_channels=in_channels, feat_channels=256, in_index=[0, 1, 2, 3],
            num_classes=num_classes, out_channels=256, num_queries=s.NUM_QUERIES,
            pixel_decoder=dict(type='mmdet.PixelDecoder', norm_cfg=dict(type='GN', num_groups=32),
                               act_cfg=dict(type='ReLU')),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=128, normalize=True),
            transformer_decoder=dict(
                return_intermediate=True, num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(attn), cross_attn_cfg=dict(attn),
                    ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, num_fcs=2,
                                 act_cfg=dict(type='ReLU', inplace=True), ffn_drop=0.1, dropout_layer=None,
                                 add_identity=True)),
                init_cfg=None),
            # The last class weight is the "no object" class's.
            loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, reduction='mean',
                          class_weight=[1.0] * num_classes + [0.1]),
            loss_mask=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, reduction='mean',
                           loss_weight=20.0),
            loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                           naive_dice=True, eps=1.0, loss_weight=1.0),
            train_cfg=dict(
                assigner=dict(type='mmdet.HungarianAssigner', match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=1.0),
                    dict(type='mmdet.FocalLossCost', weight=20.0, binary_input=True),
                    dict(type='mmdet.DiceCost', weight=1.0, pred_act=True, eps=1.0)]),
                sampler=dict(type='mmdet.MaskPseudoSampler'))),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedules.adamw_poly(lr=lr, weight_decay=optim['weight_decay'], warmup_iters=optim['warmup_iters'],
                                       power=optim['power'], eta_min=0.0, clip_grad=dict(max_norm=0.01, norm_type=2),
                                       paramwise_cfg=paramwise(variant), **schedules.steps(s)),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
