"""Backbones whose attention window the crop fixes (mmseg's BEiT and MAE): their pretrained files load,
and test images are no smaller than the window.

Both size their relative-position tables (and MAE its position grid) by `img_size`, the crop: a
640 crop is a 40x40 window of 16-pixel patches, whose tables have (2 x 40 - 1)^2 + 3 rows.

install() -- mmseg 1.2.2 resizes a pretrained relative-position table (the 14x14 window of a 224
pretraining: 27^2 + 3 rows) to the model's window with `scipy.interpolate.interp2d`
(BEiT.resize_rel_pos_embed -> BEiT._geometric_sequence_interpolation, called by BEiT's and MAE's
init_weights), which SciPy 1.14 removed: the pinned SciPy raises NotImplementedError, so a BEiT run
at any crop but 224 stops while loading its weights. install() puts `geometric_resize` in that
method's place (MAE inherits it): mmseg's sample points (a geometric progression that keeps the
centre of the table dense, from the BEiT repository) and the same interpolant, FITPACK's bicubic
interpolating spline on the grid: interp2d(kind='cubic') on a rectangular grid calls regrid_smth with
s=0, which RectBivariateSpline calls too, and both evaluate with bispev, which clamps a point past
the grid's edge to the edge. The training run installs it (common/train.py, prepare).

ResizeToAtLeast -- mmseg's sliding-window inference hands the backbone window-sized crops only of an
image that covers the window; a smaller one goes in whole, and the relative-position bias, sized by
the window, does not fit its attention map (RuntimeError). The multi-scale test (ade20k.tta_pipeline)
scales the images by 0.5..1.75, so its small views would fail. As mmseg 0.x's `Resize(min_size=...)`,
which these recipes' multi-scale numbers were measured with (configs/mae/README.md: "we set
min_size=512, that is, the shortest edge is 512"), a view smaller than the window is first enlarged,
aspect kept, until it covers it: `ade20k.tta_pipeline(min_size=crop)` in the BEiT and MAE scripts.
"""
import contextlib

import numpy as np
from mmcv.transforms import BaseTransform, Resize
from mmseg.registry import TRANSFORMS


def geometric_positions(src_size, dst_size):
    """(source grid, target grid): the 1-D coordinates mmseg gives the `src_size` offsets of a
    pretrained table and the `dst_size` offsets of the model's. The source offsets are spread by a
    geometric progression whose ratio (found by bisection in [1.01, 1.5]) makes its half span reach
    the target's half size, so that offsets near 0 keep unit spacing; the target is unit-spaced."""
    def progression(ratio, terms):
        return (1.0 - ratio ** terms) / (1.0 - ratio)

    left, right = 1.01, 1.5
    while right - left > 1e-6:
        ratio = (left + right) / 2.0
        if progression(ratio, src_size // 2) > dst_size // 2:
            right = ratio
        else:
            left = ratio
    # the last midpoint, as mmseg uses it: offsets 1, 1 + q, 1 + q + q^2, ...
    distances = np.cumsum([ratio ** i for i in range(src_size // 2)])
    source = np.concatenate([-distances[::-1], [0.0], distances])
    half = dst_size // 2.0
    target = np.arange(-half, half + 0.1, 1.0)
    return source, target


def geometric_resize(table, src_size, dst_size):
    """A relative-position table without its 3 class-token rows, (src_size^2, heads), resized to
    (dst_size^2, heads): per head, the bicubic interpolating spline of the src x src grid at
    geometric_positions, evaluated on the dst x dst grid. What mmseg's
    BEiT._geometric_sequence_interpolation computes with interp2d."""
    import torch
    from scipy.interpolate import RectBivariateSpline
    source, target = geometric_positions(src_size, dst_size)
    columns = []
    for head in range(table.shape[1]):
        grid = table[:, head].detach().float().cpu().view(src_size, src_size).numpy()  # [row = dy, col = dx]
        # interp2d(x, y, z) fits z.T on (x, y) and returns f(dx, dy).T: the same here, written out.
        spline = RectBivariateSpline(source, source, grid.T, kx=3, ky=3, s=0)
        resized = spline(target, target).T
        columns.append(torch.as_tensor(np.ascontiguousarray(resized)).reshape(-1, 1).to(table))
    return torch.cat(columns, dim=-1)


def _geometric_sequence_interpolation(self, src_size, dst_size, sequence, num):
    """BEiT._geometric_sequence_interpolation without interp2d (see install)."""
    assert sequence.shape[1] == num, (sequence.shape, num)
    return geometric_resize(sequence, src_size, dst_size)


_geometric_sequence_interpolation.common_fixed_window = True


@contextlib.contextmanager
def resizing():
    """For the duration of a BEiT or MAE run: geometric_resize where mmseg's BEiT (and MAE, its
    subclass) resizes a pretrained table; mmseg's own method again when the run ends."""
    from mmseg.models.backbones.beit import BEiT
    stock = BEiT.__dict__['_geometric_sequence_interpolation']
    BEiT._geometric_sequence_interpolation = _geometric_sequence_interpolation
    try:
        yield
    finally:
        BEiT._geometric_sequence_interpolation = stock


def installed():
    from mmseg.models.backbones.beit import BEiT
    return getattr(BEiT._geometric_sequence_interpolation, 'common_fixed_window', False)


@TRANSFORMS.register_module()
class ResizeToAtLeast(BaseTransform):
    """Enlarge an image smaller than `size` (H, W) in either side, aspect kept, until it covers
    `size`; an image that covers it already passes unchanged. Goes after a test-time Resize and
    before LoadAnnotations (labels stay at the original size, as the predictions are resized to)."""

    def __init__(self, size):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def transform(self, results):
        height, width = results['img'].shape[:2]
        factor = max(self.size[0] / height, self.size[1] / width)
        if factor <= 1:
            return results
        scale = (max(self.size[1], round(width * factor)), max(self.size[0], round(height * factor)))  # (w, h)
        return Resize(scale=scale, keep_ratio=False).transform(results)

    def __repr__(self):
        return f'{type(self).__name__}(size={self.size})'
