"""Parameters and FLOPs of a train_*.py model at 512x512, computed once and cached.

    python -m tools.bench.complexity                      # every train_*.py, default variants
    python -m tools.bench.complexity fcn segformer:mit-b2 --size 512,512

The model is the one the script builds (its `build_config`, default settings, `--backbone VARIANT`),
on the CPU, with SyncBN as BN and every `pretrained`/`init_cfg` removed so no weight file is read.
It is measured as MMSegmentation's tools/analysis_tools/get_flops.py measures it: whole-image
inference of one HxW image (`encode_decode`: backbone, decode head, resize to the input), the
auxiliary head left out. FLOPs come from mmengine's FlopAnalyzer, the counter behind
`mmengine.analysis.get_model_complexity_info` (run here without that function's activation pass and
its warnings): like fvcore, it counts one multiply-add as one FLOP, so these are GMACs in other
tools' terms. Parameters are those of that inference model; `params_total` adds the auxiliary head.

Results are cached in benchmarks/complexity_cache.json under `train_x|variant|HxW|<hash of the model
config>`: a changed model (or variant, or size) is measured again, an unchanged one never.
"""
import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

from common import cli, config, files, scripts

CACHE = 'benchmarks/complexity_cache.json'
SIZE = (512, 512)


def model_config(module, variant=None, size=SIZE):
    """(model dict, custom_imports) the script builds for `variant` (None: its default) at a `size`
    crop, with SyncBN as BN and no pretrained weights or init_cfg. The crop is the measured size: a
    model whose attention window follows the crop (BEiT, MAE) takes no other input."""
    argv = ['--no-pretrained', '--crop-size', f'{size[0]},{size[1]}']
    setting = scripts.variant_setting(vars(module))  # BACKBONE, or HEAD
    if variant is not None and setting:
        argv += [cli.flag_name(setting), variant]
    cfg = module.build_config(cli.parse(vars(module), argv))
    model = json.loads(json.dumps(config.without_pretrained(cfg['model']), default=str))
    config.sync_bn_to_bn(model)
    return model, cfg.get('custom_imports')


def cache_key(script, variant, size, model):
    digest = hashlib.sha1(json.dumps(model, sort_keys=True).encode()).hexdigest()[:12]
    return f'{script}|{variant}|{size[0]}x{size[1]}|{digest}'


def measure(model_cfg, size=SIZE, custom_imports=None):
    """Build the model on the CPU and count. Returns dict(params, params_total, flops, seconds)."""
    import torch
    from mmengine.analysis import parameter_count
    from common.infer.flops import analyze
    from common.infer.model import Logits, build
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mmseg's deprecation notes about its own loss builders
        segmentor = build(model_cfg, custom_imports, on='cpu')
    params_total = sum(p.numel() for p in segmentor.parameters())
    if getattr(segmentor, 'auxiliary_head', None) is not None:
        segmentor.auxiliary_head = None  # training-only, as get_flops.py
    model = Logits(segmentor).eval()  # one image in, per-class logits at the input size out
    flops = analyze(model, torch.rand(1, 3, *size) * 255).total()
    return dict(params=int(parameter_count(model)['']), params_total=int(params_total), flops=int(flops),
                seconds=round(time.time() - start, 1))


def _read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write(path, cache):
    files.atomic_write(json.dumps(cache, indent=1, sort_keys=True) + '\n', str(path))


def lookup(script, variant=None, size=SIZE, cache=CACHE, root='.'):
    """Complexity of train_<script>.py's `variant` at `size`: from the cache, else measured and
    stored. Returns dict(params, params_total, flops, ...); raises what building the model raises."""
    module = scripts.load(script, root)
    script = module.__name__
    if variant is None:
        variant = scripts.variant_name(vars(module))
    model, custom_imports = model_config(module, variant, size)
    key = cache_key(script, variant, size, model)
    if key in _read(cache):
        return _read(cache)[key]
    found = dict(script=script, variant=variant, size=list(size), **measure(model, size, custom_imports))
    entries = _read(cache)  # read again: keep what another process added while this one measured
    entries[key] = found
    _write(cache, entries)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='fcn, segformer:mit-b2 ... (default: every train_*.py)')
    parser.add_argument('--size', type=cli.parse_size, default=SIZE, metavar='H,W', help='input size (default 512,512)')
    parser.add_argument('--cache', default=CACHE, help=f'cache file (default {CACHE})')
    args = parser.parse_args(argv)
    models = args.models or scripts.all_names(Path('.'))
    print(f'{"model":28} {"params (M)":>10} {"GFLOPs":>9}   at {args.size[0]}x{args.size[1]}')
    failed = 0
    for entry in models:
        script, _, variant = entry.partition(':')
        try:
            found = lookup(script, variant or None, args.size, args.cache)
            print(f'{entry:28} {found["params"] / 1e6:10.2f} {found["flops"] / 1e9:9.1f}', flush=True)
        except Exception as exc:  # one model that does not build must not hide the others
            failed += 1
            print(f'{entry:28} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}',
                  flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
