"""Model parts that are the same in many recipes (the decode heads stay in the scripts).

Each returns a fresh dict equal to what the mmseg 1.2.2 _base_/models files define.
"""
from common import ade20k

SYNC_BN = dict(type='SyncBN', requires_grad=True)

RESNET_V1C = {  # name -> depth, pretrained file (open-mmlab://resnet{50,101}_v1c)
    'r50': dict(depth=50, pretrained='resnet50_v1c-2cccc1ad.pth'),
    'r101': dict(depth=101, pretrained='resnet101_v1c-e67eebb6.pth'),
}


def resnet_v1c(depth, dilated=True, norm_cfg=SYNC_BN):
    """ResNetV1c (deep stem). `dilated`: output stride 8 ('-D8': stages 3-4 dilated 2 and 4), as in
    FCN/PSPNet/DeepLab and the other *_r50-d8 recipes; else stride 32 (UPerNet, FPN)."""
    return dict(type='ResNetV1c', depth=depth, num_stages=4, out_indices=(0, 1, 2, 3),
                dilations=(1, 1, 2, 4) if dilated else (1, 1, 1, 1),
                strides=(1, 2, 1, 1) if dilated else (1, 2, 2, 2),
                norm_cfg=dict(norm_cfg), norm_eval=False, style='pytorch', contract_dilation=True)


def fcn_aux_head(in_channels=1024, channels=256, in_index=2, norm_cfg=SYNC_BN, loss_weight=0.4):
    """The auxiliary FCNHead on stage 3 that every ResNet recipe trains with (weight 0.4)."""
    return dict(type='FCNHead', in_channels=in_channels, in_index=in_index, channels=channels, num_convs=1,
                concat_input=False, dropout_ratio=0.1, num_classes=ade20k.NUM_CLASSES, norm_cfg=dict(norm_cfg),
                align_corners=False,
                loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=loss_weight))


def ce_loss(weight=1.0):
    return dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=weight)
