"""SegFormer, MiT-B0, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py`: 37.41 mIoU
single-scale, 38.34 multi-scale + flip (configs/segformer/README.md), trained on 8 GPUs x 2 images.

BACKBONE variants, each its recipe (segformer/segformer_<BACKBONE>_8xb2-160k_ade20k-<crop>.py;
single-scale / multi-scale + flip mIoU, the wheel's metafile):
  mit-b1  40.97 / 42.54      mit-b3  47.82 / 48.81      mit-b5  49.13 / 50.22
  mit-b2  45.58 / 47.03      mit-b4  48.46 / 49.76      mit-b5 at 640 (--crop-size 640)  49.62 / 50.36
The B5 640 recipe (segformer_mit-b5_8xb2-160k_ade20k-640x640.py) resizes to (2048, 640), not the
4 x crop (2560, 640) of ade20k_640x640: the B5 variant keeps the long edge at 2048 for any crop (at
512 that is the 4 x crop of the 512 recipe), so `--backbone mit-b5 --crop-size 640` builds that
recipe's train crop, resize scales and padding alike.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one.

    python train_segformer.py                             # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_segformer.py        # 8 GPUs x 2: the recipe's total batch
    python train_segformer.py --demo                      # demo data on a CPU
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/segformer_ade20k'    # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x; mit-b5: 2048 long)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 6e-5                           # AdamW, weight decay 0.01; decode head x10; 1500 warmup steps
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'mit-b0'                 # 'mit-b0' ... 'mit-b5'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py', mIoU=37.41, mIoU_ms=38.34,
                 mem_gb=2.1, fps=51.32, total_batch=16)
REFERENCES = {  # the variants' own recipes (scripts.reference_for); numbers: the wheel's metafile
    'mit-b1': dict(config='segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py', mIoU=40.97, mIoU_ms=42.54),
    'mit-b2': dict(config='segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py', mIoU=45.58, mIoU_ms=47.03),
    'mit-b3': dict(config='segformer/segformer_mit-b3_8xb2-160k_ade20k-512x512.py', mIoU=47.82, mIoU_ms=48.81),
    'mit-b4': dict(config='segformer/segformer_mit-b4_8xb2-160k_ade20k-512x512.py', mIoU=48.46, mIoU_ms=49.76),
    'mit-b5': [dict(config='segformer/segformer_mit-b5_8xb2-160k_ade20k-512x512.py', mIoU=49.13, mIoU_ms=50.22),
               dict(config='segformer/segformer_mit-b5_8xb2-160k_ade20k-640x640.py', mIoU=49.62, mIoU_ms=50.36,
                    crop_size=(640, 640), settings={'CROP_SIZE': (640, 640)})],
}
# MiT widths and depths (mmseg _base_/models/segformer_mit-b0.py and the b1..b5 recipes).
_B1_B5 = dict(embed_dims=64, head_channels=[64, 128, 320, 512])
BACKBONES = {
    'mit-b0': dict(embed_dims=32, num_layers=[2, 2, 2, 2], head_channels=[32, 64, 160, 256],
                   pretrained='mit_b0_20220624-7e0fe6dd.pth'),
    'mit-b1': dict(_B1_B5, num_layers=[2, 2, 2, 2], pretrained='mit_b1_20220624-02e5a6a1.pth'),
    'mit-b2': dict(_B1_B5, num_layers=[3, 4, 6, 3], pretrained='mit_b2_20220624-66e8bf70.pth'),
    'mit-b3': dict(_B1_B5, num_layers=[3, 4, 18, 3], pretrained='mit_b3_20220624-13b1141c.pth'),
    'mit-b4': dict(_B1_B5, num_layers=[3, 8, 27, 3], pretrained='mit_b4_20220624-d588d980.pth'),
    # B5's recipes resize to a 2048 long edge at either crop (512: 4 x crop; 640: not ade20k_640x640's 2560).
    'mit-b5': dict(_B1_B5, num_layers=[3, 6, 40, 3], resize_long_edge=2048, pretrained='mit_b5_20220624-658746d9.pth'),
}


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
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        pretrained=None,
        backbone=dict(type='MixVisionTransformer', in_channels=3, embed_dims=variant['embed_dims'], num_stages=4,
                      num_layers=variant['num_layers'], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
                      sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True, drop_rate=0.0,
                      attn_drop_rate=0.0, drop_path_rate=0.1,
                      init_cfg=pretrained.init_cfg(s.PRETRAINED, variant['pretrained'])),
        decode_head=dict(type='SegformerHead', in_channels=variant['head_channels'], in_index=[0, 1, 2, 3],
                         channels=256, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS,
                                     **pipelines(s.CROP_SIZE, variant.get('resize_long_edge'))),
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
