"""Model parts that are the same in many recipes (the decode heads stay in the scripts).

Each returns a fresh dict equal to what the mmseg 1.2.2 _base_/models files define.
"""
from common import ade20k

SYNC_BN = dict(type='SyncBN', requires_grad=True)

RESNET_V1C = {  # name -> depth, pretrained file (open-mmlab://resnet{18,50,101}_v1c)
    'r50': dict(depth=50, pretrained='resnet50_v1c-2cccc1ad.pth'),
    'r101': dict(depth=101, pretrained='resnet101_v1c-e67eebb6.pth'),
    'r18': dict(depth=18, pretrained='resnet18_v1c-b5776b93.pth'),
}
# The -D8 heads on a ResNet-18 (BasicBlocks: stage 4 has 512 channels, stage 3 256), as mmseg's
# *_r18-d8 recipes (Cityscapes only) size them: decode head 128 channels, auxiliary head 64.
R18_D8_HEADS = dict(in_channels=512, channels=128, aux_in_channels=256, aux_channels=64)
BOTTLENECK_D8_HEADS = dict(in_channels=2048, channels=512, aux_in_channels=1024, aux_channels=256)


def resnet_v1c(depth, dilated=True, norm_cfg=SYNC_BN):
    """ResNetV1c (deep stem). `dilated`: output stride 8 ('-D8': stages 3-4 dilated 2 and 4), as in
    FCN/PSPNet/DeepLab and the other *_r50-d8 recipes; else stride 32 (UPerNet, FPN)."""
    return dict(type='ResNetV1c', depth=depth, num_stages=4, out_indices=(0, 1, 2, 3),
                dilations=(1, 1, 2, 4) if dilated else (1, 1, 1, 1),
                strides=(1, 2, 1, 1) if dilated else (1, 2, 2, 2),
                norm_cfg=dict(norm_cfg), norm_eval=False, style='pytorch', contract_dilation=True)


HRNET_V2 = {  # name -> branch widths (1/4, 1/8, 1/16, 1/32 resolution), blocks per branch, modules of
    # stages 3 and 4, and the ImageNet weights (open-mmlab://msra/hrnetv2_w18_small, _w18, _w48)
    'hr18s': dict(widths=(18, 36, 72, 144), blocks=2, modules=(3, 2), pretrained='hrnetv2_w18_small-b5a04e21.pth'),
    'hr18': dict(widths=(18, 36, 72, 144), blocks=4, modules=(4, 3), pretrained='hrnetv2_w18-00eb2006.pth'),
    'hr48': dict(widths=(48, 96, 192, 384), blocks=4, modules=(4, 3), pretrained='hrnetv2_w48-d2186c55.pth'),
}


def hrnet(widths, blocks=4, modules=(4, 3), norm_cfg=SYNC_BN):
    """HRNetV2p (mmseg _base_/models/fcn_hr18.py, ocrnet_hr18.py): a bottleneck stem stage (64 channels),
    then 1, modules[0] and modules[1] modules of 2, 3 and 4 parallel branches, `blocks` basic blocks
    each (W18-Small: 2 blocks, 3 and 2 modules; W18 and W48: 4 blocks, 4 and 3 modules)."""
    def stage(num_modules, branches):
        return dict(num_modules=num_modules, num_branches=branches, block='BASIC', num_blocks=(blocks,) * branches,
                    num_channels=tuple(widths[:branches]))
    return dict(type='HRNet', norm_cfg=dict(norm_cfg), norm_eval=False,
                extra=dict(stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(blocks,),
                                       num_channels=(64,)),
                           stage2=stage(1, 2), stage3=stage(modules[0], 3), stage4=stage(modules[1], 4)))


def fcn_aux_head(in_channels=1024, channels=256, in_index=2, norm_cfg=SYNC_BN, loss_weight=0.4):
    """The auxiliary FCNHead on stage 3 that every ResNet recipe trains with (weight 0.4)."""
    return dict(type='FCNHead', in_channels=in_channels, in_index=in_index, channels=channels, num_convs=1,
                concat_input=False, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=dict(norm_cfg),
                align_corners=False,
                loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=loss_weight))


def ce_loss(weight=1.0):
    return dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=weight)
