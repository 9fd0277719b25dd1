"""UPerNet, ConvNeXt-T, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py`: 46.11 mIoU
single-scale, 46.62 multi-scale + flip (configs/convnext/README.md), trained on 8 GPUs x 2 images in
fp16 (AmpOptimWrapper, dynamic loss scale). Needs mmpretrain: the backbone is `mmpretrain.ConvNeXt`.
AdamW (weight decay 0.05, none on biases and 1-D parameters), 1500 warmup steps, and mmseg's
LearningRateDecayOptimizerConstructor (stage_wise, decay_rate 0.9, num_layers N: 6 for Tiny, 12 for
the others): the four stages train at 0.9^(N-3) .. 0.9^N of the LR, the stem and downsampling layers
at 0.9^(N+1), the heads and the backbone's output norms at the full LR (so with N = 12 the whole
backbone is at 0.25-0.39x). Sliding-window test: the crop as window, stride 2/3 of it.

BACKBONE variants, each its recipe (convnext/convnext-<arch>_upernet_8xb2-amp-160k_ade20k-<crop>.py;
mIoU single-scale / multi-scale + flip and memory as the wheel's convnext/metafile.yaml has them, fps
from configs/convnext/README.md; V100; XL's memory measured with cudnn_benchmark on, says the README):
  tiny          convnext-tiny  ... 512x512   ImageNet-1k    46.11 / 46.62   4.23 GB  19.90 fps
  small         convnext-small ... 512x512   ImageNet-1k    48.56 / 49.02   5.16 GB  15.18 fps
  base          convnext-base  ... 512x512   ImageNet-1k    48.71 / 49.54   6.33 GB  14.41 fps
  base-in21k    convnext-base  ... 640x640   ImageNet-21k   52.13 / 52.66   8.53 GB  10.88 fps
  large-in21k   convnext-large ... 640x640   ImageNet-21k   53.16 / 53.38  12.08 GB   7.69 fps
  xlarge-in21k  convnext-xlarge ... 640x640  ImageNet-21k   53.58 / 54.11  26.16 GB   6.33 fps (LR 8e-5)
Each variant sets its backbone, its stochastic depth (small 0.3, the others 0.4), its pretrained
file, its layer count for the LR decay and, for xlarge, the LR (LR = None: the variant's recipe).
The pretrained files are mmpretrain (mmcls) ImageNet classifiers, loaded with prefix 'backbone.'.

Deviations from the recipe (the user's defaults):
- CROP_SIZE stays 512 for the three ImageNet-21k variants, whose recipes train at 640: pass
  --crop-size 640 with them. The resize scale (4x, 1x: (2560, 640) as ade20k_640x640), the padding
  and the sliding test window (640, stride 426) all follow CROP_SIZE, so that is their recipe.
- The recipe trains in fp16 (AmpOptimWrapper, dynamic loss scale), as does `--precision fp16`; the
  dumped config keeps the recipe's wrapper, and PRECISION 'auto' uses bf16 on a GPU (no loss scale
  needed), fp32 on a CPU.
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).

    python train_convnext.py                              # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_convnext.py         # 8 GPUs x 2: the recipe's total batch
    python train_convnext.py --demo                       # demo data on a CPU (fp32)
"""
from common import ade20k, cli, models, pretrained, runtime, schedules

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/convnext_ade20k'     # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); resize scale and test window follow; in21k recipes: 640
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; warmup and PolyLR end follow
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR: float | None = None             # AdamW peak LR, weight decay 0.05; None: the BACKBONE's recipe (1e-4; xlarge 8e-5)
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp16 AMP)
SEED = 0                            # mmengine randomness seed
BACKBONE = 'tiny'                   # 'tiny', 'small', 'base', 'base-in21k', 'large-in21k', 'xlarge-in21k'
PRETRAINED = 'auto'                 # 'auto': the BACKBONE's ImageNet file in pretrain/; or a path

REFERENCE = dict(config='convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py', mIoU=46.11,
                 mIoU_ms=46.62, mem_gb=4.23, fps=19.90, total_batch=16)
# The in21k recipes crop 640: their command passes --crop-size 640 (tools.recipes.recipes), a run at 512 says so.
_AT_640 = dict(crop_size=(640, 640))
REFERENCES = {  # the variants' own recipes (scripts.reference_for)
    'small': dict(config='convnext/convnext-small_upernet_8xb2-amp-160k_ade20k-512x512.py', mIoU=48.56,
                  mIoU_ms=49.02, mem_gb=5.16, fps=15.18),
    'base': dict(config='convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py', mIoU=48.71,
                 mIoU_ms=49.54, mem_gb=6.33, fps=14.41),
    'base-in21k': dict(config='convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-640x640.py', mIoU=52.13,
                       mIoU_ms=52.66, mem_gb=8.53, fps=10.88, **_AT_640),
    'large-in21k': dict(config='convnext/convnext-large_upernet_8xb2-amp-160k_ade20k-640x640.py', mIoU=53.16,
                        mIoU_ms=53.38, mem_gb=12.08, fps=7.69, **_AT_640),
    'xlarge-in21k': dict(config='convnext/convnext-xlarge_upernet_8xb2-amp-160k_ade20k-640x640.py', mIoU=53.58,
                         mIoU_ms=54.11, mem_gb=26.16, fps=6.33, **_AT_640),
}
_DOWNSTREAM = 'convnext-{}_3rdparty_{}_20220301-{}.pth'  # mmpretrain's files for downstream tasks
# mmpretrain arch, stage widths, stochastic depth, LR-decay layer count, recipe LR, ImageNet file.
BACKBONES = {
    'tiny': dict(arch='tiny', widths=[96, 192, 384, 768], drop_path_rate=0.4, num_layers=6, lr=1e-4,
                 pretrained=_DOWNSTREAM.format('tiny', '32xb128-noema_in1k', '795e9634')),
    'small': dict(arch='small', widths=[96, 192, 384, 768], drop_path_rate=0.3, num_layers=12, lr=1e-4,
                  pretrained=_DOWNSTREAM.format('small', '32xb128-noema_in1k', '303e75e3')),
    'base': dict(arch='base', widths=[128, 256, 512, 1024], drop_path_rate=0.4, num_layers=12, lr=1e-4,
                 pretrained=_DOWNSTREAM.format('base', '32xb128-noema_in1k', '2a0ee547')),
    'base-in21k': dict(arch='base', widths=[128, 256, 512, 1024], drop_path_rate=0.4, num_layers=12, lr=1e-4,
                       pretrained=_DOWNSTREAM.format('base', 'in21k', '262fd037')),
    'large-in21k': dict(arch='large', widths=[192, 384, 768, 1536], drop_path_rate=0.4, num_layers=12, lr=1e-4,
                        pretrained=_DOWNSTREAM.format('large', 'in21k', 'e6e0ea0a')),
    'xlarge-in21k': dict(arch='xlarge', widths=[256, 512, 1024, 2048], drop_path_rate=0.4, num_layers=12, lr=8e-5,
                         pretrained=_DOWNSTREAM.format('xlarge', 'in21k', '08aa5ddc')),
}


def build_config(s):
    variant = cli.choose('BACKBONE', s.BACKBONE, BACKBONES)
    widths = variant['widths']
    crop = tuple(s.CROP_SIZE)
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    # The checkpoints are whole mmpretrain classifiers: take the 'backbone.' part.
    init_cfg = pretrained.init_cfg(s.PRETRAINED, variant['pretrained'], prefix='backbone.')
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(crop),
        pretrained=None,
        backbone=dict(type='mmpretrain.ConvNeXt', arch=variant['arch'], out_indices=[0, 1, 2, 3],
                      drop_path_rate=variant['drop_path_rate'], layer_scale_init_value=1.0,
                      gap_before_final_norm=False, init_cfg=init_cfg),
        decode_head=dict(type='UPerHead', in_channels=widths, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=512, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False, loss_decode=models.ce_loss(1.0)),
        auxiliary_head=models.fcn_aux_head(in_channels=widths[2]),
        train_cfg=dict(),
        # Windows of the crop overlapping by a third (512: stride 341, 640: 426), as the recipes.
        test_cfg=dict(mode='slide', crop_size=crop, stride=tuple(c * 2 // 3 for c in crop)))
    # Stage-wise LR decay (the docstring): the stage ids stem 0, stages 1-4, the rest num_layers + 1,
    # each at 0.9 ** (num_layers + 1 - id) of the LR.
    decay = dict(decay_rate=0.9, decay_type='stage_wise', num_layers=variant['num_layers'])
    bundle = schedules.adamw_poly(lr=variant['lr'] if s.LR is None else s.LR, weight_decay=0.05,
                                  warmup_iters=1500, power=1.0, eta_min=0.0, amp=True,  # the recipe's AmpOptimWrapper
                                  paramwise_cfg=decay, constructor='LearningRateDecayOptimizerConstructor',
                                  **schedules.steps(s))
    return dict(model=model,
                custom_imports=dict(imports='mmpretrain.models', allow_failed_imports=False),
                **ade20k.dataloaders(s.DATA_ROOT, crop, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **bundle,
                **runtime.defaults_for(s))


def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
