"""PoolFormer-S12 + Semantic FPN on ADE20K: 512x512 crops, 40k iterations.

Mirrors MMSegmentation 1.2.2 `poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py`: 36.68 mIoU
single-scale (configs/poolformer/README.md; no multi-scale result; the README's mIoU* column, 37.07, is
with the test-time ResizeToMultiple(32) that this recipe's test pipeline includes), trained on 8 GPUs x 4
images in fp16 (AmpOptimWrapper). Needs mmpretrain: the backbone is `mmpretrain.PoolFormer`.

BACKBONE variants, each its recipe (README mIoU; mIoU* where our reference notes have it):
  s12  fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py    36.68 (37.07*)  4.17 GB, 23.48 fps (V100)
  s24  fpn_poolformer_s24_8xb4-40k_ade20k-512x512.py    40.12
  s36  fpn_poolformer_s36_8x4_512x512_40k_ade20k.py     41.61  (old-style file name: the README and
       metafile name fpn_poolformer_s36_8xb4-40k_ade20k-512x512.py, which does not exist; notes §4.14)
  m36  fpn_poolformer_m36_8xb4-40k_ade20k-512x512.py    41.95  (metafile; not in our reference notes)
  m48  fpn_poolformer_m48_8xb4-40k_ade20k-512x512.py    42.43 (42.76*)  10.48 GB, 6.69 fps (V100)
The pretrained files are mmpretrain (mmcls) ImageNet classifiers, loaded with prefix 'backbone.'.

Deviations from the recipe (the user's defaults):
- BATCH_PER_GPU = 2 (recipe 4, total 32): the run prints the total batch and the --accumulate that
  restores 32.
- The recipe wraps the training set in RepeatDataset(times=50). Under an InfiniteSampler and an
  iteration-based loop that changes nothing but the length of a sampler "epoch" (one reshuffle per 50
  passes instead of one per pass), so the plain ADE20KDataset is used (DEVIATIONS; the
  pipelines inside it are the recipe's and are checked).
- The recipe trains in fp16 (AmpOptimWrapper, dynamic loss scale), as does `--precision fp16`; the
  dumped config keeps the recipe's wrapper, and PRECISION 'auto' uses bf16 on a GPU (no loss scale
  needed), fp32 on a CPU.
- The last 3 checkpoints are kept, plus the best-mIoU one (recipe: all of them, no best); evaluation
  and checkpoints every 4000 iterations, as the recipe.
- `--precision fp16` runs the recipe's arithmetic (its AmpOptimWrapper).

    python train_poolformer.py                            # one GPU: --accumulate 16 keeps the total 32
    torchrun --nproc_per_node=8 train_poolformer.py --batch-per-gpu 4   # the recipe's 8 x 4
    python train_poolformer.py --demo                     # demo data on a CPU (fp32)
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/poolformer_ade20k'   # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale follows (4x, 1x)
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 32 (8 x 4)
MAX_ITERS = 40_000                  # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 2e-4                           # AdamW, weight decay 1e-4; PolyLR power 0.9 to 0, no warmup
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp16 AMP)
SEED = 0                            # mmengine randomness seed
BACKBONE = 's12'                    # 's12', 's24', 's36', 'm36', 'm48'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py', mIoU=36.68, mIoU_ms=None,
                 mem_gb=4.17, fps=23.48, total_batch=32)
REFERENCES = {  # the variants' own recipes (scripts.reference_for)
    's24': dict(config='poolformer/fpn_poolformer_s24_8xb4-40k_ade20k-512x512.py', mIoU=40.12, mIoU_ms=None),
    's36': dict(config='poolformer/fpn_poolformer_s36_8x4_512x512_40k_ade20k.py', mIoU=41.61, mIoU_ms=None),
    'm36': dict(config='poolformer/fpn_poolformer_m36_8xb4-40k_ade20k-512x512.py', mIoU=41.95, mIoU_ms=None),
    'm48': dict(config='poolformer/fpn_poolformer_m48_8xb4-40k_ade20k-512x512.py', mIoU=42.43, mIoU_ms=None,
                mem_gb=10.48, fps=6.69),
}
DEVIATIONS = {'train_dataloader.dataset': 'no RepeatDataset(times=50) wrapper: under an InfiniteSampler it only '
                                          'changes when the sampler reshuffles (the docstring)'}
_S = [64, 128, 320, 512]            # stage widths of the S models; the M models are wider
_M = [96, 192, 384, 768]
BACKBONES = {
    's12': dict(widths=_S, pretrained='poolformer-s12_3rdparty_32xb128_in1k_20220414-f8d83051.pth'),
    's24': dict(widths=_S, pretrained='poolformer-s24_3rdparty_32xb128_in1k_20220414-d7055904.pth'),
    's36': dict(widths=_S, pretrained='poolformer-s36_3rdparty_32xb128_in1k_20220414-d78ff3e8.pth'),
    'm36': dict(widths=_M, pretrained='poolformer-m36_3rdparty_32xb128_in1k_20220414-c55e0949.pth'),
    'm48': dict(widths=_M, pretrained='poolformer-m48_3rdparty_32xb128_in1k_20220414-9378f3eb.pth'),
}


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    # The checkpoints are whole mmpretrain classifiers: take the 'backbone.' part.
    init_cfg = pretrained.init_cfg(s.PRETRAINED, variant['pretrained'], prefix='backbone.')
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(s.CROP_SIZE),
        backbone=dict(type='mmpretrain.PoolFormer', arch=s.BACKBONE, in_patch_size=7, in_stride=4, in_pad=2,
                      down_patch_size=3, down_stride=2, down_pad=1, drop_rate=0., drop_path_rate=0.,
                      out_indices=(0, 2, 4, 6), frozen_stages=0, init_cfg=init_cfg),
        neck=dict(type='FPN', in_channels=variant['widths'], out_channels=256, num_outs=4),
        decode_head=dict(type='FPNHead', in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3],
                         feature_strides=[4, 8, 16, 32], channels=128, dropout_ratio=0.1,
                         num_classes=ade20k.NUM_CLASSES, norm_cfg=dict(type='SyncBN', requires_grad=True),
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    # betas=None: the recipe leaves torch's default (0.9, 0.999).
    bundle = schedules.adamw_poly(lr=s.LR, weight_decay=1e-4, betas=None, warmup_iters=0, power=0.9, eta_min=0.0,
                                  amp=True, **schedules.steps(s))  # the recipe's AmpOptimWrapper
    test_pipeline = ade20k.test_pipeline(s.CROP_SIZE, extra=[dict(type='ResizeToMultiple', size_divisor=32)])
    return dict(model=model,
                custom_imports=dict(imports=['mmpretrain.models'], allow_failed_imports=False),
                **ade20k.dataloaders(s.DATA_ROOT, s.CROP_SIZE, s.BATCH_PER_GPU, s.NUM_WORKERS,
                                     test_pipeline_=test_pipeline),
                **bundle,
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
