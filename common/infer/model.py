"""The one offline model of common/infer/: built from a config, weights from a checkpoint, no pretrained
file read; and the whole-image logits function of it (ONNX export, FLOP counts).
"""
import copy

import numpy as np
import torch
from torch import nn

from common import checks, checkpoints, config, kernel_guard
from common.class_table import LABEL_OFFSET  # noqa: F401  (predict, export_onnx)


def device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def build(model_cfg, custom_imports=None, state=None, path='', on=None):
    """The segmentor of `model_cfg`, offline: SyncBN as BN (in eval mode it computes the same, and BN
    also traces on a CPU and needs no process group), no pretrained file or init_cfg read, the
    checkpoint's `state` loaded exactly (checkpoints.load_exactly), in eval mode on `on`."""
    from mmengine.config import ConfigDict
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    checks.packages(dict(model=model_cfg))
    register_all_modules(init_default_scope=True)
    if custom_imports:
        import_modules_from_strings(**custom_imports)
    offline = config.sync_bn_to_bn(config.without_pretrained(copy.deepcopy(model_cfg)))
    model = MODELS.build(ConfigDict(offline))  # a ConfigDict: mmdet heads read attributes
    if state is not None:
        checkpoints.load_exactly(model, state, path)
    kernel_guard.guard_kernels(model)  # mmcv's compiled ops in fp32 on NCHW inputs, as in training
    return model.to(on or device()).eval()


def build_from(cfg, s, checkpoint=None, flag='', on=None):
    """build() for a script's config, with CHECKPOINT's weights (read safely) when given."""
    state = checkpoints.state_dict(checkpoint, s.trust_checkpoint, flag) if checkpoint else None
    return build(cfg['model'], cfg.get('custom_imports'), state, checkpoint or '', on)


def ade20k_meta():
    """ADE20K's 150 class names and their palette (uint8, 150 x 3), as mmseg's ADE20KDataset has them."""
    from mmseg.datasets import ADE20KDataset
    return list(ADE20KDataset.METAINFO['classes']), np.array(ADE20KDataset.METAINFO['palette'], np.uint8)


class Logits(nn.Module):
    """Whole-image inference as one function of a tensor: float RGB 0..255 (N, 3, H, W) -> logits
    (N, 150, H, W). It is EncoderDecoder.whole_inference minus the data samples: the model's own
    normalisation, then encode_decode, whose decode head resizes to the input size. What ONNX
    exports and what the FLOP counters (--flops, tools/bench/complexity.py) count."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor
        pre = segmentor.data_preprocessor
        normalize = getattr(pre, '_enable_normalize', False)
        self.register_buffer('mean', pre.mean.clone() if normalize else torch.zeros(3, 1, 1))
        self.register_buffer('std', pre.std.clone() if normalize else torch.ones(3, 1, 1))

    def forward(self, image):
        x = (image - self.mean) / self.std
        # A torch.Size img_shape makes the decode head resize to the traced input size (dynamic in ONNX).
        # Every key a test-time head reads (MaskFormer's reads batch_input_shape), none padded.
        shape = x.shape[-2:]
        metas = [dict(img_shape=shape, pad_shape=shape, ori_shape=shape, batch_input_shape=shape,
                      padding_size=[0, 0, 0, 0])] * len(x)
        return self.segmentor.encode_decode(x, metas)
