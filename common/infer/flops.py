"""--flops: parameters and FLOPs of whole-image inference at --flops-size, per part of the model.

One multiply-add counts as one FLOP, as mmengine.analysis (fvcore's counter) counts; `analyze` is
also what tools/bench/complexity.py (the cached counts of the benchmark table) uses.
"""
import warnings

import torch

from common import cli, scripts
from common.infer.model import Logits, build_from


def analyze(model, inputs):
    """mmengine's FlopAnalyzer over one forward of `model` on `inputs`, quiet, counts computed (one
    multiply-add = one FLOP)."""
    from mmengine.analysis import FlopAnalyzer
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer warnings about shape-dependent Python branches
        analyzer = FlopAnalyzer(model, (inputs,))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
        analyzer.total()  # runs the trace inside the quiet block
    return analyzer


def run(cfg, s, plan):
    """Parameters and FLOPs of whole-image inference at --flops-size, per part of the model."""
    from mmengine.analysis import parameter_count
    height, width = s.flops_size or cli.FLOPS_SIZE
    model = build_from(cfg, s, on='cpu')  # CPU: mmcv ops run their PyTorch path, which the counter sees
    logits = Logits(model).eval()
    analyzer = analyze(logits, torch.rand(1, 3, height, width) * 255)
    by_module = analyzer.by_module()
    params = parameter_count(logits)
    parts = [name for name, _ in model.named_children() if params.get(f'segmentor.{name}', 0)]
    rows = [(name, params[f'segmentor.{name}'], by_module.get(f'segmentor.{name}', 0)) for name in parts]
    total_flops = int(analyzer.total())
    used = sum(p for name, p, f in rows if f)  # parts that run at inference (not the auxiliary head)
    variant = f' {scripts.variant_name(vars(s))}' if scripts.variant_name(vars(s)) else ''
    print(f'[{s.SCRIPT}]{variant} complexity at 1x3x{height}x{width}, whole-image inference '
          '(one multiply-add = one FLOP):')
    print(f'  {"part":<18}{"params":>10}  FLOPs')
    for name, count, flop in rows:
        print(f'  {name:<18}{_si(count):>10}  {_si(flop) if flop else "- (training only)"}')
    print(f'  {"total":<18}{_si(params[""]):>10}  {_si(total_flops)}')
    print(f'[{s.SCRIPT}] params {params[""]:,} ({used:,} used at inference), FLOPs {total_flops:,} '
          f'({total_flops / 1e9:.2f} G)', flush=True)
    return dict(params=params[''], params_inference=used, flops=total_flops, size=(height, width))


def _si(value):
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= scale:
            return f'{value / scale:.2f}{unit}'
    return str(value)
