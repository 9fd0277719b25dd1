"""BEiT-B/16 + UPerNet on ADE20K: 640x640 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py`: 53.08 mIoU
single-scale, 53.84 multi-scale + flip (configs/beit/README.md), trained on 8 GPUs x 2 images.
BEiT is a ViT-B/16 (12 layers) with layer scale and, instead of a position embedding, a learned
relative-position bias in every attention layer. Its window is the crop in 16-pixel patches (40x40
at 640), so CROP_SIZE sizes the relative-position tables, and the 14x14 ones of the 224 pretraining
are resized to it on loading. A Feature2Pyramid neck turns layers 4, 6, 8 and 12 (all at 1/16) into
1/4, 1/8, 1/16 and 1/32 maps for UPerNet (768 channels), plus an auxiliary FCN head on the third.
AdamW (weight decay 0.05) with layer-wise LR decay (mmseg's LayerDecayOptimizerConstructor, rate 0.9:
patch embedding and class token at 0.9^13 x LR, block i of 12 at 0.9^(13 - i), neck and heads at LR;
no weight decay on 1-D tensors and biases; the class token and the relative-position tables do decay,
as in mmseg, whose exemption names 'cls_token' without its 'backbone.' prefix), 1500 warmup steps,
then linear decay to 0. Sliding-window test (the 640 window, stride 426). The crop is 640, not the
512 of the other scripts: BEiT's recipes train at 640 only.

BACKBONE variants, each its recipe (single-scale / multi-scale + flip mIoU):
  beit-l  beit-large_upernet_8xb1-amp-160k_ade20k-640x640   56.33 / 56.84   BEiT-L/16 (24 layers,
          1024 wide, layers 8, 12, 16, 24 to the neck), UPerNet 1024 channels, LR 2e-5, layer decay
          0.95, stochastic depth 0.2, layer scale from 1e-6; fp16 (AmpOptimWrapper).
BEiT-L's schedule: the recipe trains 8 GPUs x 1 image with accumulative_counts=2, so 16 images per
optimizer step over 320k iterations, 160k steps (the README's "batch 8" and "320000"; warmup 3000
iterations = 1500 steps). Its PolyLR, though, ends at iteration 160000: the LR reaches 0 halfway and
the last 160k iterations change nothing (AdamW at LR 0). That is a slip of the port to 1.x: mmseg
0.x's file, whose run the 56.33 comes from (upernet_beit-large_fp16_8x1_640x640_160k_ade20k.py),
decays over runner.max_iters, all 320k iterations. Fixed here: the LR decays to 0 over the whole run.
MAX_ITERS counts optimizer steps, so BEiT-L is MAX_ITERS = 160000 steps of 16 images: 8 GPUs x 2 (the
default) are the recipe's 16 without accumulation, and `--batch-per-gpu 1 --accumulate 2` is its
exact layout (320k iterations, tests/test_recipes.py compares it, PolyLR end apart).

Pretrained weights: BEiT's ImageNet-22k files (self-supervised, then fine-tuned on 22k labels) from
the BEiT repository, converted to mmseg's key layout (mmseg's tools/model_converters/beit2mmseg.py
is not in the wheel; this repository has its equivalent):
    python -m common.pretrained fetch beit_base_patch16_224_pt22k_ft22k.pth
    python -m common.convert_beit pretrain/beit_base_patch16_224_pt22k_ft22k.pth
    # -> pretrain/beit_base_patch16_224_pt22k_ft22k_mmseg.pth
  beit-l: the same with beit_large_patch16_224_pt22k_ft22k.pth. The recipes call their converted
  files pretrain/beit_{base,large}_patch16_224_pt22k_ft22k.pth: pass --pretrained to use one.
mmseg resizes the relative-position tables with scipy's interp2d, which the pinned SciPy no longer
has; the run computes the same resize without it (common/fixed_window.py). The tables resize to a
square window only, so with pretrained weights the crop must be square.

Multi-scale + flip test (`--eval-only CKPT --tta`): a view smaller than the window (the 0.5 and 0.75
scales of most images) is first enlarged to cover it, aspect kept, as mmseg 0.x's min_size did for
these recipes; sliding-window inference takes no image smaller than its window. `--flops` counts at
the crop only (`--flops-size 640,640`): the window is fixed.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).
- BACKBONE = 'beit-l': the PolyLR ends with the run, not halfway (above).

    python train_beit.py                                  # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_beit.py             # 8 GPUs x 2: the recipe's total batch
    python train_beit.py --demo                           # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/beit_ade20k'          # logs, checkpoints, summary.json
CROP_SIZE = (640, 640)              # training crop, pixels (H, W); BEiT's window, resize scale and test window follow
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2; beit-l 8 x 1 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR: float | None = None             # AdamW peak LR; None: the BACKBONE's recipe (beit-b 3e-5, beit-l 2e-5)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe fp32, beit-l fp16)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'beit-b'                 # 'beit-b' or 'beit-l' (patch 16)
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's converted ImageNet-22k file in pretrain/; or a path

REFERENCE = dict(config='beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py', mIoU=53.08, mIoU_ms=53.84,
                 mem_gb=15.88, fps=2.00, total_batch=16, crop_size=(640, 640))
REFERENCES = {  # the variants' own recipes (scripts.reference_for); `flags`, `deviations`: tools.recipes.recipes
    'beit-l': dict(config='beit/beit-large_upernet_8xb1-amp-160k_ade20k-640x640.py', mIoU=56.33, mIoU_ms=56.84,
                   mem_gb=22.64, fps=0.96, total_batch=16, crop_size=(640, 640),
                   flags={'BATCH_PER_GPU': 1, 'ACCUMULATE': 2},
                   deviations={'param_scheduler[1].end': 'the PolyLR ends with the run (the 1.x recipe ends it at '
                                                         '160k of 320k iterations: LR 0 for half the run; docstring)'}),
}
# Widths, depths and training numbers of configs/beit; files made by common.convert_beit.
# The multi-scale test configs of the two recipes: their command is --eval-only CKPT --tta (tools.recipes.recipes).
TTA_CONFIGS = {'beit-b': 'beit/beit-base_upernet_8xb2-160k_ade20k-640x640_ms.py',
               'beit-l': 'beit/beit-large_upernet_8xb1-amp-160k_ade20k-640x640_ms.py'}
BACKBONES = {
    'beit-b': dict(embed_dims=768, num_layers=12, num_heads=12, out_indices=(3, 5, 7, 11),
                   drop_path_rate=0.1, init_values=0.1, lr=3e-5, layer_decay_rate=0.9, warmup_iters=1500,
                   amp=False, pretrained='beit_base_patch16_224_pt22k_ft22k_mmseg.pth'),
    'beit-l': dict(embed_dims=1024, num_layers=24, num_heads=16, out_indices=[7, 11, 15, 23],
                   drop_path_rate=0.2, init_values=1e-6, lr=2e-5, layer_decay_rate=0.95, warmup_iters=1500,
                   amp=True, pretrained='beit_large_patch16_224_pt22k_ft22k_mmseg.pth'),
}


def check_settings(s):
    """What BEiT's fixed window cannot take (common.validate calls this after the flags are read)."""
    crop, problems = tuple(s.CROP_SIZE), []
    infer = any(getattr(s, mode, None) for mode in ('eval_only', 'predict', 'export_onnx', 'flops'))
    if s.PRETRAINED is not None and not infer and crop[0] != crop[1]:
        problems.append(f'--crop-size {crop[0]},{crop[1]} (CROP_SIZE): BEiT resizes its pretrained relative-position '
                        'tables to a square window only (mmseg resize_rel_pos_embed); pass a square crop, or '
                        '--no-pretrained')
    size = tuple(getattr(s, 'flops_size', None) or cli.FLOPS_SIZE)
    if getattr(s, 'flops', False) and size != crop:
        problems.append(f'--flops at {size[0]}x{size[1]}: BEiT takes inputs of its window only, the crop; pass '
                        f'--flops-size {crop[0]},{crop[1]}')
    return problems


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    width, crop = variant['embed_dims'], tuple(s.CROP_SIZE)
    lr = variant['lr'] if s.LR is None else s.LR
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(crop),
        pretrained=pretrained.resolve(s.PRETRAINED, variant['pretrained']),
        # qv_bias: learned q and v biases, none for k (BEiT's attention); img_size: the window.
        backbone=dict(type='BEiT', img_size=crop, patch_size=16, in_channels=3, embed_dims=width,
                      num_layers=variant['num_layers'], num_heads=variant['num_heads'], mlp_ratio=4,
                      out_indices=variant['out_indices'], qv_bias=True, attn_drop_rate=0.0,
                      drop_path_rate=variant['drop_path_rate'], norm_cfg=dict(type='LN', eps=1e-6),
                      act_cfg=dict(type='GELU'), norm_eval=False, init_values=variant['init_values']),
        # The four 1/16 maps resampled to 1/4 (two 2x deconvolutions), 1/8, 1/16 and 1/32 (max pool).
        neck=dict(type='Feature2Pyramid', embed_dim=width, rescales=[4, 2, 1, 0.5]),
        decode_head=dict(type='UPerHead', in_channels=[width] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=width, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(in_channels=width, in_index=2),
        train_cfg=dict(),
        # Sliding window of the crop size, overlapping by a third (640: stride 426).
        test_cfg=dict(mode='slide', crop_size=crop, stride=tuple(c * 2 // 3 for c in crop)))
    # Layer-wise LR decay: mmseg's constructor reads num_layers and layer_decay_rate.
    paramwise_cfg = dict(num_layers=variant['num_layers'], layer_decay_rate=variant['layer_decay_rate'])
    bundle = schedules.adamw_poly(lr=lr, weight_decay=0.05, warmup_iters=variant['warmup_iters'], power=1.0,
                                  eta_min=0.0, amp=variant['amp'], paramwise_cfg=paramwise_cfg,
                                  constructor='LayerDecayOptimizerConstructor', **schedules.steps(s))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, crop, s.BATCH_PER_GPU, s.NUM_WORKERS),
                tta_pipeline=ade20k.tta_pipeline(min_size=crop),  # views no smaller than the window
                **bundle,
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
