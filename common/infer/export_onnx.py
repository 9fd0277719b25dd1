"""--export-onnx: one .onnx file of a checkpoint in whole-image mode, verified with onnxruntime.

Writes one .onnx (default WORK_DIR/<script>.onnx; --out DIR or --out FILE.onnx): input "image",
float32 RGB 0..255, N x 3 x H x W (normalisation is inside); output "logits", N x 150 x H x W in
whole-image mode (argmax = class index). Height, width and batch are dynamic where the model allows
(checked: the ONNX model must reproduce PyTorch at another size); otherwise the model is exported at
CROP_SIZE. (Mask2Former's PyTorch pipeline pads to a multiple of 32; the ONNX model takes the size
it is given.) onnxruntime then runs it on a real image (the dataset's first validation image, or
the --predict INPUT) and the max logit difference and argmax agreement with PyTorch are printed and
stored beside it (<file>.json). The export runs on the CPU, so mmcv ops with a PyTorch fallback
(MultiScaleDeformableAttention) take it; a compiled-only op (PSAMask) is named in the error.
"""
import copy
import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import ade20k, scripts
from common.errors import SetupError
from common.infer.model import LABEL_OFFSET, Logits, ade20k_meta, build_from
from common.infer.predict import VIDEO_SUFFIXES, input_files, predict_pipeline

ONNX_OPSET = 17                 # LayerNormalization is a single op from 17 on (transformers)
AGREEMENT_TARGET = 0.999        # argmax agreement an ONNX export must reach to count as faithful


def _pool_matrix(n, k, like):
    """(k, n) averaging matrix of adaptive average pooling along one axis: row i averages
    [floor(i n / k), ceil((i + 1) n / k)), PyTorch's bins."""
    i = torch.arange(k, device=like.device)
    start = torch.div(i * n, k, rounding_mode='floor')
    end = torch.div((i + 1) * n + k - 1, k, rounding_mode='floor')
    j = torch.arange(n, device=like.device)
    inside = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


class MatrixAdaptiveAvgPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d as two matrix products. ONNX has no adaptive pooling: the exporter
    turns it into a fixed AveragePool, and refuses when the output size does not divide the input
    (PSPNet's and UPerNet's 3x3 and 6x6 bins). This form exports with any, even dynamic, size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x):
        rows = _pool_matrix(x.shape[-2], self.output_size[0], x)
        cols = _pool_matrix(x.shape[-1], self.output_size[1], x)
        return rows @ x @ cols.transpose(0, 1)


class TraceableMultiheadAttention(nn.Module):
    """nn.MultiheadAttention without masks, written so that tracing keeps sequence length and batch
    symbolic: torch's own implementation reshapes with Python ints, which the ONNX exporter
    freezes (SegFormer then runs only at the export size). Same weights, same math; it returns no
    attention weights (mmcv's attention wrappers use only the output)."""

    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    @staticmethod
    def supports(attention):
        return (attention._qkv_same_embed_dim and attention.in_proj_bias is not None
                and attention.bias_k is None and not attention.add_zero_attn)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **kwargs):
        m = self.attention
        if key_padding_mask is not None or attn_mask is not None:
            return m(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                     attn_mask=attn_mask, **kwargs)
        if m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        head_dim = m.embed_dim // m.num_heads
        wq, wk, wv = m.in_proj_weight.chunk(3)
        bq, bk, bv = m.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).reshape(query.shape[0], -1, head_dim).transpose(0, 1)
        k = F.linear(key, wk, bk).reshape(key.shape[0], -1, head_dim).transpose(0, 1)
        v = F.linear(value, wv, bv).reshape(value.shape[0], -1, head_dim).transpose(0, 1)
        weights = torch.softmax(q @ k.transpose(1, 2) * head_dim ** -0.5, dim=-1)
        out = (weights @ v).transpose(0, 1).reshape(query.shape[0], -1, m.embed_dim)
        out = m.out_proj(out)
        return (out.transpose(0, 1) if m.batch_first else out), None


def exportable(model):
    """A copy of the model with the modules ONNX cannot trace faithfully replaced by equivalents."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, MatrixAdaptiveAvgPool2d(child.output_size))
            elif isinstance(child, nn.MultiheadAttention) and TraceableMultiheadAttention.supports(child):
                setattr(parent, name, TraceableMultiheadAttention(child))
    return model


def run(cfg, s, plan):
    """Export CKPT in whole-image mode, as dynamic as the model allows, and verify it with onnxruntime."""
    path = onnx_path(s)
    model = build_from(cfg, s, s.export_onnx, '--export-onnx', on='cpu')
    reference, traced = Logits(model).eval(), Logits(exportable(model)).eval()
    image = verification_image(cfg, s)
    real = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    crop = tuple(s.CROP_SIZE)
    example_size = crop if crop != tuple(real.shape[-2:]) else (crop[0] + 32, crop[1] + 32)
    at_crop = F.interpolate(real, size=crop, mode='bilinear', align_corners=False).round()
    attempts = [  # (dynamic axes, example to trace, inputs to verify on): the verify inputs differ in size
        ('batch, height, width', {0: 'batch', 2: 'height', 3: 'width'}, torch.rand(1, 3, *example_size) * 255,
         torch.cat([real, real.flip(-1)])),
        ('height, width', {2: 'height', 3: 'width'}, torch.rand(1, 3, *example_size) * 255, real),
        (f'none: fixed at {crop[0]}x{crop[1]}', None, at_crop, at_crop),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    print(f'[{s.SCRIPT}] exporting {s.export_onnx} to {path} (opset {ONNX_OPSET}, whole-image mode)', flush=True)
    for dynamic, axes, example, inputs in attempts:
        try:
            _trace_to_onnx(traced, example, path, axes)
        except Exception as exc:
            failures.append(f'{dynamic}: {type(exc).__name__}: {_first_line(exc)}')
            continue
        _refuse_custom_ops(path, model, s)
        check = compare_with_onnxruntime(path, reference, inputs)
        if check.get('argmax_agreement', 0) >= AGREEMENT_TARGET:
            break
        failures.append(f'{dynamic}: {check.get("error") or "agreement " + str(check.get("argmax_agreement"))}')
    else:
        path.unlink(missing_ok=True)  # not a file anyone should deploy
        raise SetupError(f'{s.SCRIPT} cannot be exported to ONNX faithfully: {_culprit(failures)}\n    '
                         + '\n    '.join(failures), 'use the PyTorch model (--predict) for this one')
    result = dict(onnx=str(path), checkpoint=str(s.export_onnx), model=s.SCRIPT,
                  variant=scripts.variant_name(vars(s)), opset=ONNX_OPSET, dynamic_axes=dynamic,
                  input='image: float32 RGB 0..255, N x 3 x H x W (mean/std normalisation inside)',
                  output=f'logits: float32 N x {ade20k.NUM_CLASSES} x H x W; argmax = class index '
                         f'(ADE20K id - {LABEL_OFFSET})',
                  verified_on=f'{verification_source(cfg, s)} at {tuple(inputs.shape)}', **check,
                  not_dynamic_because=failures or None)
    _add_metadata(path, result)
    Path(f'{path}.json').write_text(json.dumps(result, indent=2) + '\n')
    print(f'[{s.SCRIPT}] wrote {path}: dynamic axes {dynamic}; onnxruntime vs PyTorch on '
          f'{result["verified_on"]}: max |logit diff| {check["max_abs_diff"]:.2e}, argmax agreement '
          f'{check["argmax_agreement"] * 100:.3f}%', flush=True)
    for failure in failures:
        print(f'[{s.SCRIPT}]   not exported as {failure}', flush=True)
    return result


def onnx_path(s):
    """--out FILE.onnx, --out DIR (-> DIR/<script>.onnx), or WORK_DIR/<script>.onnx."""
    if s.out and s.out.endswith('.onnx'):
        return Path(s.out)
    return Path(s.out or s.WORK_DIR) / f'{s.SCRIPT}.onnx'


def _trace_to_onnx(model, example, path, axes):
    names = dict(input_names=['image'], output_names=['logits'])
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings flag Python values frozen into the graph; the onnxruntime run at another
        # size (and batch) below is what tells whether that matters.
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          do_constant_folding=True, **names,
                          dynamic_axes={'image': axes, 'logits': axes} if axes else None)


def _refuse_custom_ops(path, model, s):
    """A node outside the standard ONNX domain (mmcv::MMCVPSAMask) cannot run in onnxruntime."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    custom = sorted({f'{n.domain}::{n.op_type}' for n in graph.node if n.domain not in ('', 'ai.onnx')})
    if custom:
        kernels = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith('mmcv.ops')})
        path.unlink()
        raise SetupError(f'{s.SCRIPT} cannot be exported to ONNX: it uses {", ".join(kernels) or "a custom op"} '
                         f'(a compiled mmcv op), exported as {", ".join(custom)}, which onnxruntime does not '
                         'implement', 'use the PyTorch model (--predict); running it from ONNX needs mmcv\'s '
                                      'custom-op library for onnxruntime (mmdeploy)')


def compare_with_onnxruntime(path, reference, inputs):
    """Run the ONNX file and the PyTorch model on the same inputs: max |logit difference| and the
    fraction of pixels whose argmax class agrees; or an error message."""
    import onnxruntime as ort
    with torch.no_grad():
        expected = reference(inputs).numpy()
    try:
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        got = session.run(None, {'image': inputs.numpy()})[0]
    except Exception as exc:
        return dict(error=f'onnxruntime: {_first_line(exc)}')
    if got.shape != expected.shape:
        return dict(error=f'onnxruntime gives shape {got.shape}, PyTorch {expected.shape}')
    return dict(max_abs_diff=float(np.abs(got - expected).max()),
                argmax_agreement=float((got.argmax(1) == expected.argmax(1)).mean()))


def _first_line(exc):
    text = str(exc).strip()
    return (text.splitlines() or [''])[0][:300]


def _culprit(failures):
    """The operator named in the exporter's messages, e.g. "aten::foo" or "PSAMaskFunction"."""
    for failure in failures:
        found = re.search(r"(?:operator|Python operator|op)\s+'?([\w:.]+)'?", failure)
        if found:
            return f'operator {found.group(1)}'
    return 'see the attempts below'


def _add_metadata(path, result):
    """The input contract and class names inside the ONNX file, for whoever deploys it."""
    import onnx
    model = onnx.load(str(path))
    classes, palette = ade20k_meta()
    fields = dict(input=result['input'], output=result['output'], source=result['checkpoint'],
                  classes=json.dumps(classes), palette=json.dumps(palette.tolist()))
    for key, value in fields.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def verification_source(cfg, s):
    """The image the export is checked on: --predict's INPUT (first image or frame), else the
    dataset's first validation image."""
    if s.predict:
        source = Path(s.predict[1])
        files, video = input_files(source)
        return str(video or files[0])
    folder = Path(cfg['test_dataloader']['dataset']['data_root'], 'images', ade20k.SPLITS['val'])
    images = sorted(folder.glob(f'*{ade20k.IMG_SUFFIX}')) if folder.is_dir() else []
    if not images:
        raise SetupError(f'--export-onnx verifies on a real image, and {folder} has none',
                         'pass --data-root of your ADE20K copy, or an image with --predict CKPT IMAGE')
    return str(images[0])


def verification_image(cfg, s):
    """That image after the recipe's test resize, as RGB uint8 (H, W, 3)."""
    import cv2
    import mmcv
    source = Path(verification_source(cfg, s))
    if source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        ok, bgr = capture.read()
        capture.release()
        if not ok:
            raise SetupError(f'cannot read a frame of {source}', 'pass a readable video or an image')
    else:
        bgr = mmcv.imread(str(source), 'color')
    packed = predict_pipeline(cfg)(dict(img=bgr))
    return packed['inputs'].numpy().transpose(1, 2, 0)[..., ::-1]  # packed is BGR CHW
