"""K-Net (3 kernel-update stages) on UPerNet, ResNet-50, on ADE20K: 512x512 crops, 80k iterations.

Mirrors MMSegmentation 1.2.2 `knet/knet-s3_r50-d8_upernet_8xb2-adamw-80k_ade20k-512x512.py`: 43.45 mIoU
single-scale, 44.07 multi-scale + flip (configs/knet/README.md), trained on 8 GPUs x 2 images.
A kernel-generate head (UPerHead by default) gives 150 class kernels and a feature map; three
KernelUpdateHeads refine the kernels against the features they segment. (The UPerNet recipe's name
says "-d8", but its ResNet-V1c is not dilated: output stride 32, as UPerNet. Under the FCN, PSPNet
and DeepLabV3 heads it is: stages 3-4 dilated 2 and 4, output stride 8.)

Every ADE20K recipe of the folder (knet/knet-s3_<BACKBONE>_<HEAD>_8xb2-adamw-80k_ade20k-<crop>.py;
the wheel's metafile, mIoU single-scale / multi-scale + flip), BACKBONE x HEAD:
  BACKBONE    HEAD                   crop  mIoU
  r50         upernet (the default)  512  43.45 / 44.07
  r50         fcn                    512  43.60 / 45.12  FCNHead, 2 convs + input concat, on stage 4
  r50         pspnet                 512  44.18 / 45.58  PSPHead, pool scales 1, 2, 3, 6, on stage 4
  r50         deeplabv3              512  45.06 / 46.11  ASPPHead, dilations 1, 12, 24, 36, on stage 4
  swin-t      upernet                512  45.84 / 46.27  Swin-T, ImageNet-1k, stochastic depth 0.3
  swin-l-512  upernet                512  52.05 / 53.24  Swin-L, ImageNet-22k, stochastic depth 0.3
  swin-l      upernet                640  52.21 / 53.34  the same Swin-L, stochastic depth 0.4 (--crop-size 640)
The Swin recipes train with AdamW 6e-5 (R-50: 1e-4), no weight decay on norms and position tables.
The two Swin-L recipes differ in more than the crop: the 640 file sets drop_path_rate 0.4, the 512
one keeps its base's 0.3, so each is its own BACKBONE (swin-l-512's long edge follows the crop, 4x,
as its base's ade20k pipelines).

BACKBONE = 'swin-l' builds knet-s3_swin-l_upernet_8xb2-adamw-80k_ade20k-640x640.py. Pass --crop-size 640
to train it at the 640 it is named for
(`torchrun --nproc_per_node=8 train_knet.py --backbone swin-l --crop-size 640`): the crop then
reaches the train crop, the resize scale (2048, 640), the test resize and the padding alike. The
upstream 1.2.2 file does not: it sets its 640 pipelines, then re-assigns `train_dataloader` and
`val_dataloader`, so it trains with a 512 crop at scale (2048, 512) and tests at (2048, 512) while
padding to 640 (reference §4.2). CROP_SIZE stays (512, 512) by default, as in every script, so
'swin-l' at the default crop is the 512 recipe's pipeline with the 640 recipe's model; the 512
recipe itself is 'swin-l-512'.
K-Net Swin-L has 247M parameters: the CPU smoke test runs the R-50 default only.
Swin-T's ImageNet file is the recipe's swin_tiny_patch4_window7_224_20220308-f41b89d3.pth, not the
20220317 one train_swin.py uses (`python -m common.pretrained fetch` it).

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 8000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).
- BACKBONE = 'swin-l' with --crop-size 640 trains at 640 (the upstream file's 512 is a bug, above).

    python train_knet.py                                  # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_knet.py             # 8 GPUs x 2: the recipe's total batch
    python train_knet.py --demo                           # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/knet_ade20k'         # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows; swin-l recipe: 640
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 80_000                  # optimizer steps; the two 10x LR drops (at LR_DROPS of it) follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR: float | None = None             # AdamW peak LR; None: the BACKBONE's recipe (r50 1e-4, swin-* 6e-5)
WARMUP_ITERS = 1_000                # linear warmup from 0.001 x LR, steps (recipe)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'r50'                    # 'r50' (ResNet-V1c), 'swin-t', 'swin-l-512' or 'swin-l' (the 640 recipe's)
HEAD = 'upernet'                    # kernel-generate head: 'upernet', 'fcn', 'pspnet' or 'deeplabv3' (ASPP)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path
NUM_KERNEL_UPDATES = 3              # kernel-update stages (the "S3" of the recipe)

REFERENCE = dict(config='knet/knet-s3_r50-d8_upernet_8xb2-adamw-80k_ade20k-512x512.py', mIoU=43.45, mIoU_ms=44.07,
                 mem_gb=7.34, fps=17.11, total_batch=16)
# The upstream 640 file sets 640 pipelines, then re-assigns the 512 ones (docstring): here they are 640.
_UPSTREAM_512 = "the 640 recipe's own 640 pipelines; the upstream file re-assigns 512 ones (a bug, docstring)"
REFERENCES = {  # (BACKBONE, HEAD) -> that recipe (scripts.reference_for)
    ('r50', 'fcn'): dict(config='knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py', mIoU=43.6, mIoU_ms=45.12),
    ('r50', 'pspnet'): dict(config='knet/knet-s3_r50-d8_pspnet_8xb2-adamw-80k_ade20k-512x512.py', mIoU=44.18,
                            mIoU_ms=45.58),
    ('r50', 'deeplabv3'): dict(config='knet/knet-s3_r50-d8_deeplabv3_8xb2-adamw-80k_ade20k-512x512.py', mIoU=45.06,
                               mIoU_ms=46.11),
    ('swin-t', 'upernet'): dict(config='knet/knet-s3_swin-t_upernet_8xb2-adamw-80k_ade20k-512x512.py', mIoU=45.84,
                                mIoU_ms=46.27),
    ('swin-l-512', 'upernet'): dict(config='knet/knet-s3_swin-l_upernet_8xb2-adamw-80k_ade20k-512x512.py',
                                    mIoU=52.05, mIoU_ms=53.24),
    ('swin-l', 'upernet'): dict(
        config='knet/knet-s3_swin-l_upernet_8xb2-adamw-80k_ade20k-640x640.py', mIoU=52.21, mIoU_ms=53.34,
        mem_gb=13.54, fps=8.29, crop_size=(640, 640),
        deviations={f'{split}_dataloader.dataset.pipeline': _UPSTREAM_512 for split in ('train', 'val', 'test')}),
}
LR_DROPS = [0.75, 0.9]              # fractions of MAX_ITERS where the LR drops 10x (recipe: 60k and 72k of 80k)
# Swin: the recipes' SwinTransformer, window 7, without absolute position embedding.
_SWIN_L = dict(embed_dims=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48])
BACKBONES = {
    'r50': dict(channels=[256, 512, 1024, 2048], lr=1e-4, pretrained=models.RESNET_V1C['r50']['pretrained']),
    'swin-t': dict(channels=[96, 192, 384, 768], lr=6e-5,
                   swin=dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], drop_path_rate=0.3),
                   pretrained='swin_tiny_patch4_window7_224_20220308-f41b89d3.pth'),
    'swin-l-512': dict(channels=[192, 384, 768, 1536], lr=6e-5, swin=dict(_SWIN_L, drop_path_rate=0.3),
                       pretrained='swin_large_patch4_window7_224_22k_20220308-d5bdebaf.pth'),
    # The 640 recipe resizes to (2048, 640), not ade20k_640x640's (2560, 640): its long edge is fixed.
    'swin-l': dict(channels=[192, 384, 768, 1536], lr=6e-5, resize_long_edge=2048,
                   swin=dict(_SWIN_L, drop_path_rate=0.4),
                   pretrained='swin_large_patch4_window7_224_22k_20220308-d5bdebaf.pth'),
}
# Kernel-generate heads; `dilated`: the R-50 is dilated (output stride 8) under the single-input ones.
HEADS = {
    'upernet': dict(dilated=False),
    'fcn': dict(dilated=True),
    'pspnet': dict(dilated=True),
    'deeplabv3': dict(dilated=True),
}


def backbone_dict(variant, dilated):
    if 'swin' not in variant:
        return models.resnet_v1c(50, dilated=dilated)
    swin = variant['swin']
    return dict(type='SwinTransformer', embed_dims=swin['embed_dims'], depths=swin['depths'],
                num_heads=swin['num_heads'], window_size=7, mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_rate=0.,
                attn_drop_rate=0., drop_path_rate=swin['drop_path_rate'], use_abs_pos_embed=False, patch_norm=True,
                out_indices=(0, 1, 2, 3))


def kernel_generate_head(head, channels, norm_cfg):
    """The head whose classifier weights are the 150 initial kernels: UPerHead on all four stages, or
    an FCN / PSP / ASPP head on the last one."""
    shared = dict(channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                  align_corners=False, loss_decode=models.ce_loss(1.0))
    if head == 'upernet':
        return dict(type='UPerHead', in_channels=channels, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6), **shared)
    last = dict(in_channels=channels[3], in_index=3)
    if head == 'fcn':
        return dict(type='FCNHead', **last, num_convs=2, concat_input=True, **shared)
    if head == 'pspnet':
        return dict(type='PSPHead', **last, pool_scales=(1, 2, 3, 6), **shared)
    return dict(type='ASPPHead', **last, dilations=(1, 12, 24, 36), **shared)


def adamw_warmup_multistep(s, lr, swin):
    """AdamW with grad clip 1; LinearLR warmup from 0.001 x LR, then x0.1 at each of LR_DROPS.
    The wrapper, AMP and accumulation come from schedules.adamw_poly; the scheduler is K-Net's own."""
    bundle = schedules.adamw_poly(lr=lr, clip_grad=dict(max_norm=1, norm_type=2), **schedules.steps(s))
    # The R-50 recipe leaves AdamW's betas at their default; the Swin one writes the same values out.
    betas = dict(betas=(0.9, 0.999)) if swin else {}
    bundle['optim_wrapper']['optimizer'] = dict(type='AdamW', lr=lr, **betas, weight_decay=0.0005)
    if swin:
        bundle['optim_wrapper']['paramwise_cfg'] = dict(custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.), 'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)})
    end = schedules.end_iter(s.MAX_ITERS, s.ACCUMULATE)
    bundle['param_scheduler'] = schedules.warmup_then(
        dict(type='MultiStepLR', milestones=[round(f * end) for f in LR_DROPS]), warmup_iters=s.WARMUP_ITERS,
        start_factor=0.001, max_iters=s.MAX_ITERS, accumulate=s.ACCUMULATE)
    return bundle


def pipelines(crop_size, resize_long_edge):
    """The train and test pipelines; with `resize_long_edge`, both resize to (that, crop) instead of
    (4 x crop, crop)."""
    if resize_long_edge is None:
        return dict()
    scale = (resize_long_edge, max(crop_size))
    train = ade20k.train_pipeline(crop_size, resize=dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0),
                                                         keep_ratio=True))
    test = ade20k.test_pipeline(crop_size)
    test[1] = dict(type='Resize', scale=scale, keep_ratio=True)
    return dict(train_pipeline_=train, test_pipeline_=test)


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    head = cli.choose('HEAD', s.HEAD, HEADS)
    lr = variant['lr'] if s.LR is None else s.LR
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    num_classes = ade20k.NUM_CLASSES
    kernel_update_head = dict(
        type='KernelUpdateHead', num_classes=num_classes, num_ffn_fcs=2, num_heads=8, num_mask_fcs=1,
        feedforward_channels=2048, in_channels=512, out_channels=512, dropout=0.0, conv_kernel_size=1,
        ffn_act_cfg=dict(type='ReLU', inplace=True), with_ffn=True,
        feat_transform_cfg=dict(conv_cfg=dict(type='Conv2d'), act_cfg=None),
        kernel_updator_cfg=dict(type='KernelUpdator', in_channels=256, feat_channels=256, out_channels=256,
                                act_cfg=dict(type='ReLU', inplace=True), norm_cfg=dict(type='LN')))
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, variant['pretrained']),
        backbone=backbone_dict(variant, head['dilated']),
        decode_head=dict(
            type='IterativeDecodeHead', num_stages=s.NUM_KERNEL_UPDATES,
            kernel_update_head=[dict(kernel_update_head) for _ in range(s.NUM_KERNEL_UPDATES)],
            kernel_generate_head=kernel_generate_head(s.HEAD, variant['channels'], norm_cfg)),
        auxiliary_head=models.fcn_aux_head(in_channels=variant['channels'][2]),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS,
                                     **pipelines(s.CROP_SIZE, variant.get('resize_long_edge'))),
                **adamw_warmup_multistep(s, lr, swin='swin' in variant),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
