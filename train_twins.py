"""Twins (PCPVT-S) + UPerNet on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `twins/twins_pcpvt-s_uperhead_8xb4-160k_ade20k-512x512.py`: 46.04 mIoU
single-scale, 46.92 multi-scale + flip (configs/twins/README.md), trained on 8 GPUs x 4 images.

BACKBONE x HEAD picks one of the twelve Twins ADE20K recipes (twins/twins_<backbone>_<head>_...):
  HEAD='uperhead': UPerHead + FCN aux head, 160k, AdamW 6e-5 wd 0.01, 1500 warmup, linear decay to 0.
      pcpvt-s (8xb4) 46.04 / 46.92     pcpvt-b (8xb2) 47.91 / 48.64     pcpvt-l (8xb2) 49.35 / 50.08
      svt-s (8xb2)   46.08 / 46.96     svt-b (8xb2)   48.04 / 48.87     svt-l (8xb2)   49.65 / 50.63
  HEAD='fpn': FPN neck + FPNHead, 80k, AdamW 1e-4 wd 1e-4, no warmup, PolyLR power 0.9; all 8xb4.
      pcpvt-s 43.26 / 44.11 (6.60 GB, 27.15 fps on V100)   pcpvt-b 45.66 / 46.48   pcpvt-l 45.94 / 46.70
      svt-s   44.47 / 45.42                                svt-b   46.77 / 47.47   svt-l   46.55 / 47.74
  (pcpvt-b, pcpvt-l and svt-b, and the svt-l FPN row: the metafile's numbers; not in our reference notes)
  PCPVT: PVT with conditional position encodings. SVT (files alt_gvt_*): spatially separable attention,
  alternating locally-grouped and global sub-sampled layers.
The FPN recipes differ in more than the head: run them as
    python train_twins.py --head fpn --max-iters 80000 --lr 1e-4     (and a total batch of 32)
(MAX_ITERS and LR default to the UPerNet recipe's; the rest of the FPN schedule follows HEAD.)

Deviations from the recipe (the user's defaults, and one upstream bug):
- BATCH_PER_GPU = 2 (recipe 4 for pcpvt-s UPerNet and every FPN recipe, total 32; 2 for the others,
  total 16): the run prints the total batch and the --accumulate that restores the reference's.
- HEAD='fpn' only: the FPN configs set AdamW lr=1e-4 and inherit schedule_80k's PolyLR eta_min=1e-4, so
  their LR never moves (reference notes §4.6). The published FPN weights (2021, mmseg 0.x) most likely
  trained so too: mmcv 1.x's poly policy, (lr - min_lr) * coeff + min_lr, is equally flat at min_lr=1e-4.
  Here ETA_MIN = 0, so the LR decays as the poly schedule intends; `--eta-min 1e-4` restores the
  upstream constant LR.
- Evaluation and checkpoint every 4000 iterations (recipe 16000 UPerNet, 8000 FPN); the last 3
  checkpoints are kept, plus the best-mIoU one.

    python train_twins.py                                 # one GPU: --accumulate 16 keeps the total 32
    torchrun --nproc_per_node=8 train_twins.py --batch-per-gpu 4   # the recipe's 8 x 4
    python train_twins.py --demo                          # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/twins_ade20k'        # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 32 (8 x 4)
MAX_ITERS = 160_000                 # optimizer steps (UPerNet recipes; the FPN ones train 80_000)
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 6e-5                           # AdamW (UPerNet recipes; the FPN ones use 1e-4)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'pcpvt-s'                # 'pcpvt-s', 'pcpvt-b', 'pcpvt-l', 'svt-s', 'svt-b', 'svt-l'
HEAD = 'uperhead'                   # 'uperhead' (UPerHead + aux FCN) or 'fpn' (FPN neck + FPNHead)
ETA_MIN = 0.0                       # PolyLR end LR; the FPN configs' 1e-4 (their LR) holds the LR constant
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='twins/twins_pcpvt-s_uperhead_8xb4-160k_ade20k-512x512.py', mIoU=46.04, mIoU_ms=46.92,
                 mem_gb=None, fps=None, total_batch=32)
# The FPN recipes: 80k at LR 1e-4, their command's flags (MAX_ITERS and LR default to the UPerNet
# recipes'; a run without them still shows these numbers, and the banner says where it differs), ETA_MIN 0.
_FPN = dict(total_batch=32, flags={'MAX_ITERS': 80_000, 'LR': 1e-4},
            deviations={'param_scheduler[0].eta_min': 'ETA_MIN 0: the upstream 1e-4 (= its LR) holds the LR '
                                                      'constant (docstring)'})
REFERENCES = {  # (BACKBONE, HEAD) -> that recipe (scripts.reference_for); the FPN ones train 80k
    ('pcpvt-b', 'uperhead'): dict(config='twins/twins_pcpvt-b_uperhead_8xb2-160k_ade20k-512x512.py', mIoU=47.91,
                                  mIoU_ms=48.64, total_batch=16),
    ('pcpvt-l', 'uperhead'): dict(config='twins/twins_pcpvt-l_uperhead_8xb2-160k_ade20k-512x512.py', mIoU=49.35,
                                  mIoU_ms=50.08, total_batch=16),
    ('svt-s', 'uperhead'): dict(config='twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py', mIoU=46.08,
                                mIoU_ms=46.96, total_batch=16),
    ('svt-b', 'uperhead'): dict(config='twins/twins_svt-b_uperhead_8xb2-160k_ade20k-512x512.py', mIoU=48.04,
                                mIoU_ms=48.87, total_batch=16),
    ('svt-l', 'uperhead'): dict(config='twins/twins_svt-l_uperhead_8xb2-160k_ade20k-512x512.py', mIoU=49.65,
                                mIoU_ms=50.63, mem_gb=8.41, fps=10.73, total_batch=16),
    ('pcpvt-s', 'fpn'): dict(config='twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py', mIoU=43.26,
                             mIoU_ms=44.11, mem_gb=6.60, fps=27.15, **_FPN),
    ('pcpvt-b', 'fpn'): dict(config='twins/twins_pcpvt-b_fpn_fpnhead_8xb4-80k_ade20k-512x512.py', mIoU=45.66,
                             mIoU_ms=46.48, **_FPN),
    ('pcpvt-l', 'fpn'): dict(config='twins/twins_pcpvt-l_fpn_fpnhead_8xb4-80k_ade20k-512x512.py', mIoU=45.94,
                             mIoU_ms=46.70, **_FPN),
    ('svt-s', 'fpn'): dict(config='twins/twins_svt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py', mIoU=44.47,
                           mIoU_ms=45.42, **_FPN),
    ('svt-b', 'fpn'): dict(config='twins/twins_svt-b_fpn_fpnhead_8xb4-80k_ade20k-512x512.py', mIoU=46.77,
                           mIoU_ms=47.47, **_FPN),
    ('svt-l', 'fpn'): dict(config='twins/twins_svt-l_fpn_fpnhead_8xb4-80k_ade20k-512x512.py', mIoU=46.55,
                           mIoU_ms=47.74, **_FPN),
}
_PCPVT = dict(type='PCPVT', embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4],
              norm_after_stage=False)
_SVT = dict(type='SVT', embed_dims=[64, 128, 256, 512], num_heads=[2, 4, 8, 16], mlp_ratios=[4, 4, 4, 4],
            norm_after_stage=True, windiow_sizes=[7, 7, 7, 7])  # sic: mmseg's SVT argument is spelled so
# drop_path: stochastic depth per HEAD, as each recipe sets it.
BACKBONES = {
    'pcpvt-s': dict(_PCPVT, depths=[3, 4, 6, 3], drop_path=dict(uperhead=0.2, fpn=0.2),
                    pretrained='pcpvt_small_20220308-e638c41c.pth'),
    'pcpvt-b': dict(_PCPVT, depths=[3, 4, 18, 3], drop_path=dict(uperhead=0.3, fpn=0.2),
                    pretrained='pcpvt_base_20220308-0621964c.pth'),
    'pcpvt-l': dict(_PCPVT, depths=[3, 8, 27, 3], drop_path=dict(uperhead=0.3, fpn=0.2),
                    pretrained='pcpvt_large_20220308-37579dc6.pth'),
    'svt-s': dict(_SVT, depths=[2, 2, 10, 4], drop_path=dict(uperhead=0.2, fpn=0.2),
                  pretrained='alt_gvt_small_20220308-7e1c3695.pth'),
    'svt-b': dict(_SVT, embed_dims=[96, 192, 384, 768], num_heads=[3, 6, 12, 24], depths=[2, 2, 18, 2],
                  drop_path=dict(uperhead=0.2, fpn=0.2), pretrained='alt_gvt_base_20220308-1b7eb711.pth'),
    'svt-l': dict(_SVT, embed_dims=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32], depths=[2, 2, 18, 2],
                  drop_path=dict(uperhead=0.3, fpn=0.3), pretrained='alt_gvt_large_20220308-fb5936f3.pth'),
}
HEADS = {'uperhead': 'UPerHead + FCN aux head: the 160k recipes', 'fpn': 'FPN neck + FPNHead: the 80k recipes'}


def backbone_dict(variant, head, init_cfg):
    backbone = {k: v for k, v in variant.items() if k not in ('drop_path', 'pretrained')}
    backbone.update(in_channels=3, patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], out_indices=(0, 1, 2, 3),
                    qkv_bias=True, norm_cfg=dict(type='LN'), sr_ratios=[8, 4, 2, 1], drop_rate=0.0,
                    attn_drop_rate=0., drop_path_rate=variant['drop_path'][head], init_cfg=init_cfg)
    return backbone


def heads(head, stage_channels, norm_cfg):
    """The decode part of the model: UPerHead + FCN aux head, or FPN neck + FPNHead."""
    if head == 'uperhead':
        return dict(decode_head=dict(type='UPerHead', in_channels=stage_channels, in_index=[0, 1, 2, 3],
                                     pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1,
                                     num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg, align_corners=False,
                                     loss_decode=models.ce_loss(1.0)),
                    auxiliary_head=models.fcn_aux_head(in_channels=stage_channels[2]))
    return dict(neck=dict(type='FPN', in_channels=stage_channels, out_channels=256, num_outs=4),
                decode_head=dict(type='FPNHead', in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3],
                                 feature_strides=[4, 8, 16, 32], channels=128, dropout_ratio=0.1,
                                 num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg, align_corners=False,
                                 loss_decode=models.ce_loss(1.0)))


def schedule(s):
    if s.HEAD == 'uperhead':
        return schedules.adamw_poly(lr=s.LR, weight_decay=0.01, warmup_iters=1500, power=1.0, eta_min=s.ETA_MIN,
                                    paramwise_cfg=schedules.transformer_paramwise(('pos_block', 'norm')),
                                    **schedules.steps(s))
    # betas=None: the FPN recipes leave torch's default (0.9, 0.999).
    return schedules.adamw_poly(lr=s.LR, weight_decay=1e-4, betas=None, warmup_iters=0, power=0.9,
                                eta_min=s.ETA_MIN, **schedules.steps(s))


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    cli.choose('HEAD', s.HEAD, HEADS)
    init_cfg = pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        backbone=backbone_dict(variant, s.HEAD, init_cfg),
        **heads(s.HEAD, variant['embed_dims'], dict(type='SyncBN', requires_grad=True)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedule(s),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
