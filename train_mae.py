"""MAE ViT-B/16 + UPerNet on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py`: 48.13 mIoU
single-scale, 48.70 multi-scale + flip (configs/mae/README.md), trained on 8 GPUs x 2 images.
The backbone is mmseg's MAE: BEiT's transformer (12 layers, layer scale, a relative-position bias in
every attention layer; a plain qkv bias, not BEiT's separate q and v biases) plus an absolute
position embedding, initialised from MAE's self-supervised ImageNet-1k ViT-B encoder. The window is
the crop in 16-pixel patches (32x32 at 512): CROP_SIZE sizes the position grid (the file's 14x14 is
resized to it on loading, bicubic) and the relative-position tables. A Feature2Pyramid neck turns
layers 4, 6, 8 and 12 (all at 1/16) into 1/4, 1/8, 1/16 and 1/32 maps for UPerNet (768 channels),
plus an auxiliary FCN head on the third. AdamW (LR 1e-4, weight decay 0.05) with layer-wise LR
decay (mmseg's LayerDecayOptimizerConstructor, rate 0.65: patch embedding and class token at
0.65^13 x LR, block i of 12 at 0.65^(13 - i), neck and heads at LR; no weight decay on 1-D tensors
and biases; the class token, position grid and relative-position tables do decay, as in mmseg, whose
exemption names 'pos_embed' and 'cls_token' without their 'backbone.' prefix), 1500 warmup steps,
then linear decay to 0. Sliding-window test (512 window, stride 341).

The pretrained file has no layer scales and no relative-position tables: MAE pretrains a plain ViT.
mmseg's MAE starts them where the recipe puts them, layer scale 1.0 (init_values) and a zero bias
table, so the network starts as the pretrained ViT; the pretrained-file check accepts exactly those
tensors missing and refuses a file that lacks any other (common/weights_fit.py). The file's final
norm goes unused (final_norm=False), as with beit2mmseg.py's output.

Precision: despite the "amp" in its name, the recipe builds a plain OptimWrapper and sets the legacy
`fp16 = dict(loss_scale='dynamic')` key, which mmengine ignores: it trains in fp32 unless launched
with tools/train.py --amp (reference §4.5). The config here has the recipe's OptimWrapper and leaves
the dead key out; PRECISION 'auto' trains in bf16 on a GPU, `--precision fp16` is the AMP the name
promises, `--precision fp32` what the file does.

Pretrained weights: MAE's ViT-B/16 encoder, converted to mmseg's key layout (mmseg's
tools/model_converters/beit2mmseg.py, which the MAE README uses, is not in the wheel; this
repository has its equivalent):
    python -m common.pretrained fetch mae_pretrain_vit_base.pth
    python -m common.convert_beit pretrain/mae_pretrain_vit_base.pth
    # -> pretrain/mae_pretrain_vit_base_mmseg.pth
The recipe calls its converted file pretrain/mae_pretrain_vit_base_mmcls.pth: pass --pretrained to
use one. The position grid resizes to a square window only, so with pretrained weights the crop
must be square.

Multi-scale + flip test (`--eval-only CKPT --tta`): a view smaller than the window is first enlarged
to cover it, aspect kept (the README: "we set min_size=512"); sliding-window inference takes no
image smaller than its window. `--flops` counts at the crop only: the window is fixed.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).

    python train_mae.py                                   # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_mae.py              # 8 GPUs x 2: the recipe's total batch
    python train_mae.py --demo                            # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/mae_ade20k'           # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); the window, resize scale and test window follow
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 1e-4                           # AdamW, weight decay 0.05, layer decay 0.65; 1500 warmup steps
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32, see above)
SEED = 0                            # mmengine randomness seed
PRETRAINED = 'auto'                 # 'auto': the converted MAE ViT-B encoder in pretrain/; or a path

REFERENCE = dict(config='mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py', mIoU=48.13, mIoU_ms=48.70,
                 mem_gb=9.96, fps=7.14, total_batch=16)
# The recipe's multi-scale test config: its command is --eval-only CKPT --tta (tools.recipes.recipes); no variants.
TTA_CONFIGS = {None: 'mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512-ms.py'}


def check_settings(s):
    """What MAE's fixed window cannot take (common.validate calls this after the flags are read)."""
    crop, problems = tuple(s.CROP_SIZE), []
    infer = any(getattr(s, mode, None) for mode in ('eval_only', 'predict', 'export_onnx', 'flops'))
    if s.PRETRAINED is not None and not infer and crop[0] != crop[1]:
        problems.append(f'--crop-size {crop[0]},{crop[1]} (CROP_SIZE): MAE resizes its pretrained position grid to a '
                        'square one only (mmseg resize_abs_pos_embed); pass a square crop, or --no-pretrained')
    size = tuple(getattr(s, 'flops_size', None) or cli.FLOPS_SIZE)
    if getattr(s, 'flops', False) and size != crop:
        problems.append(f'--flops at {size[0]}x{size[1]}: MAE takes inputs of its window only, the crop; pass '
                        f'--flops-size {crop[0]},{crop[1]}')
    return problems


def build_config(s):
    crop, width, depth = tuple(s.CROP_SIZE), 768, 12  # ViT-B
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(crop),
        pretrained=pretrained.resolve(s.PRETRAINED, 'mae_pretrain_vit_base_mmseg.pth'),  # common.convert_beit
        # init_values=1.0: layer scale starts as the identity, so the plain pretrained ViT is unchanged.
        backbone=dict(type='MAE', img_size=crop, patch_size=16, in_channels=3, embed_dims=width,
                      num_layers=depth, num_heads=12, mlp_ratio=4, out_indices=[3, 5, 7, 11],
                      attn_drop_rate=0.0, drop_path_rate=0.1, norm_cfg=dict(type='LN', eps=1e-6),
                      act_cfg=dict(type='GELU'), norm_eval=False, init_values=1.0),
        # The four 1/16 maps resampled to 1/4 (two 2x deconvolutions), 1/8, 1/16 and 1/32 (max pool).
        neck=dict(type='Feature2Pyramid', embed_dim=width, rescales=[4, 2, 1, 0.5]),
        decode_head=dict(type='UPerHead', in_channels=[width] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=width, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(in_channels=width, in_index=2),
        train_cfg=dict(),
        # Sliding window of the crop size, overlapping by a third (512: stride 341).
        test_cfg=dict(mode='slide', crop_size=crop, stride=tuple(c * 2 // 3 for c in crop)))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, crop, s.BATCH_PER_GPU, s.NUM_WORKERS),
                tta_pipeline=ade20k.tta_pipeline(min_size=crop),  # views no smaller than the window
                **schedules.adamw_poly(lr=s.LR, weight_decay=0.05, warmup_iters=1500, power=1.0, eta_min=0.0,
                                       paramwise_cfg=dict(num_layers=depth, layer_decay_rate=0.65),
                                       constructor='LayerDecayOptimizerConstructor', **schedules.steps(s)),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
