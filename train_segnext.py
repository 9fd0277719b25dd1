"""SegNeXt, MSCAN-T, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py`: 41.50 mIoU
single-scale, 42.59 multi-scale + flip (configs/segnext/README.md), trained on ONE GPU x 16 images
(17.88 GB on an A100): the README reports that SyncBN in MSCAN hurts, so the recipe avoids multi-GPU.
BACKBONE variants, each its recipe segnext_mscan-{s,b,l}_1xb16-adamw-160k_ade20k-512x512.py (README):
  mscan-s 44.16 / 45.81    mscan-b 48.03 / 49.68    mscan-l 50.99 / 52.10 (43.32 GB on one A100)
The LightHamHead's NMF starts from a random matrix, at test time too: results move with the seed
(reference notes §4.9: mscan-l 49.60-51.0 across runs) and evaluation of a fixed checkpoint is not
bit-reproducible unless the seed is fixed.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe: 16 on one GPU). `--accumulate 8` on one GPU restores the total 16 for
  the optimizer, but MSCAN's BatchNorm then normalises over 2 images per forward pass instead of 16;
  `--batch-per-gpu 16` on one large GPU is the recipe exactly. On 8 GPUs (8 x 2) the BN is per GPU
  (plain BN as the recipe, not SyncBN), again 2 images.
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one.

    python train_segnext.py --accumulate 8                # one GPU, 2 x 8: the recipe's total 16
    torchrun --nproc_per_node=8 train_segnext.py          # 8 GPUs x 2: total 16, BN over 2 per GPU
    python train_segnext.py --demo                        # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/segnext_ade20k'      # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (1 GPU x 16)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 6e-5                           # AdamW, weight decay 0.01; decode head x10; 1500 warmup steps
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed (SegNeXt results are seed-sensitive)
BACKBONE = 'mscan-t'                # 'mscan-t', 'mscan-s', 'mscan-b', 'mscan-l'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py', mIoU=41.50, mIoU_ms=42.59,
                 mem_gb=17.88, fps=52.38, total_batch=16)
REFERENCES = {  # the variants' own recipes (scripts.reference_for); all 1 GPU x 16, as the default
    'mscan-s': dict(config='segnext/segnext_mscan-s_1xb16-adamw-160k_ade20k-512x512.py', mIoU=44.16, mIoU_ms=45.81),
    'mscan-b': dict(config='segnext/segnext_mscan-b_1xb16-adamw-160k_ade20k-512x512.py', mIoU=48.03, mIoU_ms=49.68),
    'mscan-l': dict(config='segnext/segnext_mscan-l_1xb16-adamw-160k_ade20k-512x512.py', mIoU=50.99, mIoU_ms=52.10,
                    mem_gb=43.32, fps=22.91),
}
# MSCAN widths, depths, stochastic depth, and the LightHamHead width (ham_channels = channels).
_WIDE = [64, 128, 320, 512]
BACKBONES = {
    'mscan-t': dict(embed_dims=[32, 64, 160, 256], depths=[3, 3, 5, 2], drop_path_rate=0.1, head_channels=256,
                    pretrained='mscan_t_20230227-119e8c9f.pth'),
    'mscan-s': dict(embed_dims=_WIDE, depths=[2, 2, 4, 2], drop_path_rate=0.1, head_channels=256,
                    pretrained='mscan_s_20230227-f33ccdf2.pth'),
    'mscan-b': dict(embed_dims=_WIDE, depths=[3, 3, 12, 3], drop_path_rate=0.1, head_channels=512,
                    pretrained='mscan_b_20230227-3ab7d230.pth'),
    'mscan-l': dict(embed_dims=_WIDE, depths=[3, 5, 27, 3], drop_path_rate=0.3, head_channels=1024,
                    pretrained='mscan_l_20230227-cef260d4.pth'),
}


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    model = dict(
        type='EncoderDecoder',
        # As the recipe: whole test images are padded to a multiple of 32 (crops to CROP_SIZE in training).
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE, test_cfg=dict(size_divisor=32)),
        pretrained=None,
        backbone=dict(type='MSCAN', embed_dims=variant['embed_dims'], mlp_ratios=[8, 8, 4, 4], drop_rate=0.0,
                      drop_path_rate=variant['drop_path_rate'], depths=variant['depths'],
                      attention_kernel_sizes=[5, [1, 7], [1, 11], [1, 21]],
                      attention_kernel_paddings=[2, [0, 3], [0, 5], [0, 10]], act_cfg=dict(type='GELU'),
                      norm_cfg=dict(type='BN', requires_grad=True),  # plain BN: SyncBN hurts MSCAN (README)
                      init_cfg=pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])),
        decode_head=dict(type='LightHamHead', in_channels=variant['embed_dims'][1:], in_index=[1, 2, 3],
                         channels=variant['head_channels'], ham_channels=variant['head_channels'], dropout_ratio=0.1,
                         num_classes=ade20k.NUM_CLASSES, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
                         align_corners=False, loss_decode=models.ce_loss(1.0),
                         # NMF: 1 group, rank 16, 6 multiplicative-update steps in training and 7 at test,
                         # random init of the bases every forward pass.
                         ham_kwargs=dict(MD_S=1, MD_R=16, train_steps=6, eval_steps=7, inv_t=100, rand_init=True)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedules.adamw_poly(lr=s.LR, weight_decay=0.01, warmup_iters=1500, power=1.0, eta_min=0.0,
                                       paramwise_cfg=schedules.transformer_paramwise(('pos_block', 'norm'),
                                                                                     head_lr_mult=10.),
                                       **schedules.steps(s)),
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
