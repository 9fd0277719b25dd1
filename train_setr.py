"""SETR, ViT-L/16 with the naive decoder, on ADE20K: 512x512 crops, 160k iterations.

Mirrors MMSegmentation 1.2.2 `setr/setr_vit-l_naive_8xb2-160k_ade20k-512x512.py`: 48.28 mIoU
single-scale, 49.56 multi-scale + flip (configs/setr/README.md), trained on 8 GPUs x 2 images.
SGD with no weight decay, decode and auxiliary heads at 10x LR, PolyLR down to 1e-4; sliding-window
test (512 window, stride 341).

HEAD variants, each its recipe (single-scale / multi-scale + flip mIoU):
  naive  setr_vit-l_naive_8xb2-160k_ade20k-512x512   48.28 / 49.56  1x1 convs, one 4x upsampling; LR 0.01
  pup    setr_vit-l_pup_8xb2-160k_ade20k-512x512     48.24 / 49.99  progressive upsampling, 4 x (conv, 2x); LR 0.001
  mla    setr_vit-l_mla_8xb2-160k_ade20k-512x512     47.39 / 49.37  multi-level aggregation (MLANeck); LR 0.001
         setr_vit-l-mla_8xb1-160k_ade20k-512x512     47.34 / 49.05  the same at 8 GPUs x 1 (--batch-per-gpu 1)
LR = 'auto' takes the HEAD's recipe LR: PUP and MLA train at 0.001 with the same eta_min 1e-4, so
their LR only falls 10x (reference §4.7).

Pretrained weights: timm's ViT-L/16 at 384 (jx_vit_large_p16_384-b3be5167.pth), converted to mmseg's
key layout (mmseg's tools/model_converters/vit2mmseg.py is not in the wheel; this repository has its
equivalent):
    python -m common.pretrained fetch jx_vit_large_p16_384-b3be5167.pth
    python -m common.convert_vit pretrain/jx_vit_large_p16_384-b3be5167.pth
    # -> pretrain/jx_vit_large_p16_384-b3be5167_mmseg.pth (the recipe calls it pretrain/vit_large_p16.pth)
As in mmseg, the backbone (patch_bias=False, final_norm=False) leaves the file's patch-embedding bias
and final norm unused; the 24x24 position grid is resized to the crop's on loading.

Deviations from the recipe (the user's defaults):
- Evaluation and checkpoint every 4000 iterations (recipe 16000); the last 3 checkpoints are kept,
  plus the best-mIoU one (recipe: all of them, no best).
- EMBED_DIMS (default 1024, the recipe's ViT-L) exists for CPU tests only: ViT-L (about 300M
  parameters) is too large for them, so the smoke test and a quick demo narrow it
  (`--embed-dims 64`, random init). Any other width is not SETR's recipe.

    python train_setr.py                                  # one GPU: --accumulate 8 keeps the total 16
    torchrun --nproc_per_node=8 train_setr.py             # 8 GPUs x 2: the recipe's total batch
    python train_setr.py --demo --embed-dims 64           # demo data on a CPU, a narrowed ViT
"""
from common import ade20k, cli, models, pretrained, runtime, schedules
from common.errors import SetupError

# ---- settings: edit to retune; each is also a flag (MAX_ITERS -> --max-iters) ----
DATA_ROOT = ade20k.DATA_ROOT        # ADEChallengeData2016 folder
WORK_DIR = 'work_dirs/setr_ade20k'         # logs, checkpoints, summary.json
CROP_SIZE = (512, 512)              # training crop, pixels (H, W); ViT grid, resize scale and test window follow
BATCH_PER_GPU = 2                   # images per GPU per iteration; reference total 16 (8 x 2)
MAX_ITERS = 160_000                 # optimizer steps; the PolyLR end follows
VAL_INTERVAL = 4_000                # evaluation and checkpoint period, steps
LR = 'auto'                         # SGD, no weight decay, heads x10, poly to 1e-4; 'auto': naive 0.01, pup/mla 0.001
PRECISION = 'auto'                  # 'auto': bf16 on a GPU, fp32 on a CPU; or bf16/fp16/fp32 (recipe: fp32)
SEED = 0                            # mmengine randomness seed
HEAD = 'naive'                      # 'naive', 'pup' or 'mla' (decoder; each its recipe)
PRETRAINED = 'auto'                 # 'auto': pretrain/jx_vit_large_p16_384-b3be5167_mmseg.pth (converted); or a path
EMBED_DIMS = 1024                   # ViT-L width (recipe); a smaller multiple of 16 only for CPU tests, random init

REFERENCE = dict(config='setr/setr_vit-l_naive_8xb2-160k_ade20k-512x512.py', mIoU=48.28, mIoU_ms=49.56,
                 mem_gb=18.40, fps=4.72, total_batch=16)
REFERENCES = {  # the HEADs' own recipes (scripts.reference_for)
    'pup': dict(config='setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py', mIoU=48.24, mIoU_ms=49.99,
                mem_gb=19.54, fps=4.50),
    'mla': [dict(config='setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py', mIoU=47.39, mIoU_ms=49.37),
            dict(config='setr/setr_vit-l-mla_8xb1-160k_ade20k-512x512.py', mIoU=47.34, mIoU_ms=49.05,
                 total_batch=8, settings={'BATCH_PER_GPU': 1})],  # its 8 x 1 base config
}
_PRETRAINED_FILE = 'jx_vit_large_p16_384-b3be5167_mmseg.pth'  # made by common.convert_vit
VIT_L = dict(embed_dims=1024, num_layers=24, num_heads=16)
HEADS = {
    'naive': dict(lr=0.01, out_indices=(9, 14, 19, 23)),
    'pup': dict(lr=0.001, out_indices=(9, 14, 19, 23)),
    'mla': dict(lr=0.001, out_indices=(5, 11, 17, 23)),
}
# The smoke test trains a 64-wide ViT (all 24 layers): ViT-L is too large for a CPU test.
SMOKE_TEST_FLAGS = ['--embed-dims', '64']


def learning_rate(setting, head):
    if setting == 'auto':
        return head['lr']
    try:
        return float(setting)
    except ValueError:
        raise SetupError(f'LR = {setting!r} is not a number', "pass --lr auto or a number such as 0.001") from None


def up_head(width, in_index, num_convs, kernel_size, loss_weight, up_scale=None, act_cfg=None):
    """SETRUPHead: `num_convs` x (conv, BN, ReLU, `up_scale`x bilinear), then the classifier."""
    head = dict(type='SETRUPHead', in_channels=width, channels=256, in_index=in_index, num_classes=ade20k.NUM_CLASSES,
                dropout_ratio=0, norm_cfg=dict(models.SYNC_BN), num_convs=num_convs, kernel_size=kernel_size,
                align_corners=False, loss_decode=models.ce_loss(loss_weight))
    if up_scale is not None:
        head['up_scale'] = up_scale
    if act_cfg is not None:
        head['act_cfg'] = act_cfg
    return head


def heads(name, width):
    """(neck, decode head, auxiliary heads) of one SETR recipe."""
    relu = dict(type='ReLU')
    if name == 'mla':
        neck = dict(type='MLANeck', in_channels=[width] * 4, out_channels=256, norm_cfg=dict(models.SYNC_BN),
                    act_cfg=relu)
        decode = dict(type='SETRMLAHead', in_channels=(256, 256, 256, 256), channels=512, in_index=(0, 1, 2, 3),
                      dropout_ratio=0, mla_channels=128, num_classes=ade20k.NUM_CLASSES,
                      norm_cfg=dict(models.SYNC_BN), align_corners=False, loss_decode=models.ce_loss(1.0))
        # A linear classifier on each of the 4 aggregated levels.
        aux = [dict(type='FCNHead', in_channels=256, channels=256, in_index=i, dropout_ratio=0,
                    norm_cfg=dict(models.SYNC_BN), act_cfg=relu, num_convs=0, kernel_size=1, concat_input=False,
                    num_classes=ade20k.NUM_CLASSES, align_corners=False, loss_decode=models.ce_loss(0.4))
               for i in range(4)]
        return neck, decode, aux
    kernel = 1 if name == 'naive' else 3
    decode = (up_head(width, 3, num_convs=1, kernel_size=1, loss_weight=1.0, up_scale=4) if name == 'naive' else
              up_head(width, 3, num_convs=4, kernel_size=3, loss_weight=1.0, up_scale=2))
    # Auxiliary heads on layers 10, 15 and 20: two (conv, 4x up) each (SETRUPHead's default up_scale).
    aux = [up_head(width, i, num_convs=2, kernel_size=kernel, loss_weight=0.4, act_cfg=relu) for i in range(3)]
    return None, decode, aux


def build_config(s):
    head = cli.choose('HEAD', s.HEAD, HEADS)
    width = s.EMBED_DIMS
    checkpoint = pretrained.resolve(s.PRETRAINED, _PRETRAINED_FILE)
    if width % VIT_L['num_heads'] or width <= 0:
        raise SetupError(f'EMBED_DIMS = {width} is not a positive multiple of {VIT_L["num_heads"]} (the heads)',
                         'pass --embed-dims 1024 (the recipe), or e.g. 64 for a CPU test')
    if width != VIT_L['embed_dims'] and checkpoint:
        raise SetupError(f'EMBED_DIMS = {width}: the ViT-L checkpoint {checkpoint} only fits 1024',
                         'a narrowed ViT is for CPU tests: add --no-pretrained, or drop --embed-dims')
    crop = tuple(s.CROP_SIZE)
    neck, decode_head, auxiliary_head = heads(s.HEAD, width)
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=ade20k.data_preprocessor(crop),
        pretrained=None,
        backbone=dict(type='VisionTransformer', img_size=crop, patch_size=16, in_channels=3, embed_dims=width,
                      num_layers=VIT_L['num_layers'], num_heads=VIT_L['num_heads'], out_indices=head['out_indices'],
                      drop_rate=0.0, norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
                      # MLA aggregates the patch tokens only.
                      with_cls_token=s.HEAD != 'mla', interpolate_mode='bilinear',
                      init_cfg=pretrained.init_cfg(s.PRETRAINED, _PRETRAINED_FILE)),
        decode_head=decode_head,
        auxiliary_head=auxiliary_head,
        train_cfg=dict(),
        # Sliding window of the crop size, stride 2/3 of it (512: 341).
        test_cfg=dict(mode='slide', crop_size=crop, stride=tuple(c * 2 // 3 for c in crop)))
    if neck is not None:
        model['neck'] = neck
    return dict(model=model,
                **ade20k.dataloaders(s.DATA_ROOT, crop, s.BATCH_PER_GPU, s.NUM_WORKERS),
                **schedules.sgd_poly(lr=learning_rate(s.LR, head), weight_decay=0.0,
                                     paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}),
                                     **schedules.steps(s)),
                **runtime.defaults_for(s))



def main(argv=None):
    s = cli.parse(globals(), argv, doc=__doc__)
    runtime.run(build_config, s)


if __name__ == '__main__':
    main()
