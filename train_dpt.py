"""DPT, ViT-B/16, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py`: 46.97 mIoU single-scale,
48.34 multi-scale + flip (configs/dpt/README.md), trained on 8 GPUs x 2 images.
A plain ViT-B (12 layers, stride 16 throughout, no final norm) hands the DPT head layers 3, 6, 9 and
12 with their class tokens. The head's reassemble blocks join each layer's class token to every
patch ('project' readout: concatenate, linear, GELU), project the four maps to 96, 192, 384 and 768
channels and resample them to 1/4, 1/8, 1/16 and 1/32; fusion blocks (residual convs, 2x
upsampling) merge them at 256 channels from the coarsest up; a 3x3 conv and the classifier follow.
No auxiliary head. AdamW, 1500 warmup steps, no weight decay on position embedding, class token and norms.
The folder has this one ADE20K recipe.

Pretrained weights: timm's ImageNet ViT-B/16 (jx_vit_base_p16_224-80ecf9dd.pth), converted to mmseg's
key layout (mmseg's tools/model_converters/vit2mmseg.py is not in the wheel; this repository has its
equivalent). It is the same file as train_vit_deit.py's BACKBONE=vit-b:
    python -m common.pretrained fetch jx_vit_base_p16_224-80ecf9dd.pth
    python -m common.convert_vit pretrain/jx_vit_base_p16_224-80ecf9dd.pth
    # -> pretrain/jx_vit_base_p16_224-80ecf9dd_mmseg.pth (the recipe calls it pretrain/vit-b16_p16_224-80ecf9dd.pth)
As in mmseg, the backbone (patch_bias=False, final_norm=False) leaves the file's patch-embedding bias
and final norm unused. The recipe keeps the ViT at img_size 224: its 14x14 position grid is loaded as
it is and resized (bicubic) to the crop's grid at every forward.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).

    python train_dpt.py                                   # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_dpt.py              # 8 GPUs x 2: the recipe's total batch
    python train_dpt.py --demo                            # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/dpt_ade20k'          # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 6e-5                           # AdamW, weight decay 0.01 (none on pos/cls/norms); 1500 warmup steps
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
PRETRAINED = 'auto'                 # 'auto': pretrain/jx_vit_base_p16_224-80ecf9dd_mmseg.pth (converted); or a path

REFERENCE = dict(config='dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py', mIoU=46.97, mIoU_ms=48.34,
                 mem_gb=8.09, fps=10.41, total_batch=16)
_PRETRAINED_FILE = 'jx_vit_base_p16_224-80ecf9dd_mmseg.pth'  # made by common.convert_vit
_WIDTH = 768                        # ViT-B


def build_config(s):
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=pretrained.resolve(s.PRETRAINED, _PRETRAINED_FILE),
        # img_size 224 (the pretraining's), not the crop: the position grid is resized per forward.
        backbone=dict(type='VisionTransformer', img_size=224, embed_dims=_WIDTH, num_layers=12, num_heads=12,
                      out_indices=(2, 5, 8, 11), final_norm=False, with_cls_token=True, output_cls_token=True),
        decode_head=dict(type='DPTHead', in_channels=(_WIDTH,) * 4, channels=256, embed_dims=_WIDTH,
                         post_process_channels=[96, 192, 384, 768], num_classes=ade20k.NUM_CLASSES,
                         readout_type='project', input_transform='multiple_select', in_index=(0, 1, 2, 3),
                         norm_cfg=dict(models.SYNC_BN), loss_decode=models.ce_loss(1.0)),
        auxiliary_head=None,
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
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
