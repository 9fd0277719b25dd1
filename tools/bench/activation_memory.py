"""Peak memory and time of a training step with and without --activation-ckpt, on the CPU.

    .venv/bin/python -m tools.bench.activation_memory --scripts fcn:r18-d8,segformer --crop 512 --batch 2 \
        --json benchmarks/activation_ckpt/cpu.json

Each script's model (its config, from scratch, BN for SyncBN as a CPU run has it) takes training steps
on a random batch (images and 150-class labels at --crop) with its recipe's optimizer, the model
wrapped as a run wraps it (common.activation_ckpt.install). A CPU has no max_memory_allocated: the peak
is read from torch.profiler's memory records (profile_memory=True) of one step after a warm-up step:
the running sum of every allocation and free in the step, its maximum above what was allocated when
the step began (weights, gradients, optimizer state): the step's activations and temporaries.
s/iter is the median of --iters unprofiled steps. Prints a markdown table; --json keeps it.
"""
import argparse
import json
import statistics
import time
from pathlib import Path


def _model_and_batch(name, variant, crop, batch, on):
    import torch
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from common import activation_ckpt, cli, config, scripts
    module = scripts.load(name)
    flags = ['--no-pretrained', '--crop-size', str(crop), *(['--backbone', variant] if variant else [])]
    s = cli.parse(vars(module), flags + (['--activation-ckpt'] if on else []))
    cfg = config.sync_bn_to_bn(activation_ckpt.apply(module.build_config(s), s.ACTIVATION_CKPT, s.SCRIPT))
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(cfg['model']))
    model.init_weights()
    blocks = activation_ckpt.install(model, cfg[activation_ckpt.KEY]) if on else 0
    wrapper = dict(cfg['optim_wrapper'], type='OptimWrapper')
    wrapper.pop('loss_scale', None), wrapper.pop('dtype', None)
    optim = build_optim_wrapper(model, ConfigDict(wrapper))
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(crop, crop), pad_shape=(crop, crop), ori_shape=(crop, crop)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, crop, crop), generator=generator))
        samples.append(sample)
    images = [torch.randint(0, 256, (3, crop, crop), generator=generator, dtype=torch.uint8) for _ in range(batch)]
    return model, optim, dict(inputs=images, data_samples=samples), blocks


def _step(model, optim, data):
    model.train()
    model.train_step(data, optim)


def _peak_bytes(model, optim, data):
    """Highest running sum of the profiler's memory events in one step: bytes above the step's start."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(model, optim, data)
    # The raw records, one per allocation (+bytes) or free (-bytes), with its time: prof.events() folds
    # allocations into the ops that made them, which would hide the peak inside an op.
    records = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                     key=lambda e: e.start_ns())
    current = peak = 0
    for record in records:
        current += record.nbytes()
        peak = max(peak, current)
    return peak


def measure(name, variant, crop, batch, on, iters):
    import torch
    model, optim, data, blocks = _model_and_batch(name, variant, crop, batch, on)
    _step(model, optim, data)  # warm-up: optimizer state made, allocator settled
    peak = _peak_bytes(model, optim, data)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        _step(model, optim, data)
        times.append(time.perf_counter() - start)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return dict(script=name, variant=variant, crop=crop, batch=batch, activation_ckpt=on, blocks=blocks,
                peak_step_mb=round(peak / 2**20, 1), params_mb=round(params / 2**20, 1),
                sec_per_iter=round(statistics.median(times), 2), threads=torch.get_num_threads())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scripts', default='fcn:r18-d8,segformer', help='script[:backbone], comma-separated')
    parser.add_argument('--crop', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=2, help='timed steps per setting (after the profiled one)')
    parser.add_argument('--json', help='also write the rows here')
    args = parser.parse_args(argv)
    rows = []
    for item in args.scripts.split(','):
        name, _, variant = item.partition(':')
        for on in (False, True):
            rows.append(measure(name, variant or None, args.crop, args.batch, on, args.iters))
            print(json.dumps(rows[-1]), flush=True)
    print('\n| script | crop x batch | activation ckpt | blocks | peak step memory (MB) | s/iter |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print(f"| {row['script']}{':' + row['variant'] if row['variant'] else ''} | {row['crop']}x{row['crop']} x "
              f"{row['batch']} | {'on' if row['activation_ckpt'] else 'off'} | {row['blocks'] or '-'} | "
              f"{row['peak_step_mb']} | {row['sec_per_iter']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
    main()
