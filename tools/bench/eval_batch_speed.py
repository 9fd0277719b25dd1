"""Batched vs one-at-a-time evaluation, same process, same weights, on a set with ADE20K's size mix.

    .venv/bin/python -m tools.bench.eval_batch_speed --scripts fcn,segformer --images 60 --crop 256 \
        --batches 1,8 --json benchmarks/cpu_eval_batch/eval_batch.json

The validation set is synthetic (common/demo_data.py scenes) with the aspect ratios ADE20K's photos
mostly have: 4:3 landscape (which the test resize makes one shape), 3:4 portrait, square, 16:9, and a
share of odd sizes that each stay alone. --crop sets the scripts' CROP_SIZE, and with it the test
resize (short side = crop), to keep a CPU run short. Prints a markdown table; --json keeps it.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# (w, h) and share of the set, ADE20K-like; 'odd' sizes are drawn per image.
MIX = [((640, 480), 0.40), ((800, 600), 0.10), ((1024, 768), 0.05), ((480, 640), 0.12), ((512, 512), 0.08),
       ((896, 504), 0.08), ('odd', 0.17)]


def sizes(count, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    found = []
    for size, share in MIX:
        for _ in range(round(share * count)):
            found.append(size if size != 'odd' else (int(rng.integers(300, 900)), int(rng.integers(300, 700))))
    rng.shuffle(found)
    return [tuple(map(int, s)) for s in found[:count]]


def measure(name, root, crop, batch):
    import torch
    from mmengine.registry import METRICS
    from mmengine.runner import Runner
    from common import batched_eval, cli, scripts
    from common.infer.model import build
    module = scripts.load(name)
    s = cli.parse(vars(module), ['--data-root', root, '--crop-size', str(crop), '--no-pretrained',
                                 '--num-workers', '0', '--eval-batch', str(batch)])
    cfg = module.build_config(s)
    torch.manual_seed(0)
    model = build(cfg['model'], on='cpu')
    loader = Runner.build_dataloader(batched_eval.batched(copy.deepcopy(cfg['test_dataloader']), batch))
    metric = METRICS.build(copy.deepcopy(cfg['test_evaluator']))
    metric.dataset_meta = loader.dataset.metainfo
    steps, start = 0, time.perf_counter()
    with torch.no_grad():
        for data in loader:
            outputs = model.test_step(data)
            metric.process(data, [o.to_dict() for o in outputs])
            steps += 1
    seconds = time.perf_counter() - start
    miou = metric.compute_metrics(metric.results)['mIoU']
    return dict(script=name, eval_batch=batch, steps=steps, images=len(loader.dataset), seconds=round(seconds, 2),
                img_per_sec=round(len(loader.dataset) / seconds, 3), mIoU=round(float(miou), 4))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scripts', default='fcn,segformer')
    parser.add_argument('--images', type=int, default=60)
    parser.add_argument('--crop', type=int, default=256)
    parser.add_argument('--batches', default='1,8')
    parser.add_argument('--repeats', type=int, default=1,
                        help='passes over the batch sizes, interleaved (1,8,1,8): each row keeps its fastest pass, '
                             'so load from other processes on the machine biases no batch size')
    parser.add_argument('--json')
    args = parser.parse_args(argv)
    import torch
    from common import demo_data
    with tempfile.TemporaryDirectory() as tmp:
        root = str(demo_data.write(tmp, n_train=1, n_val=args.images, size=sizes(args.images)))
        passes = [[measure(name, root, args.crop, int(b)) for b in args.batches.split(',')]
                  for name in args.scripts.split(',') for _ in range(args.repeats)]
    rows = []
    for row in (r for p in passes for r in p):  # the fastest pass of each (script, batch)
        same = [r for r in rows if (r['script'], r['eval_batch']) == (row['script'], row['eval_batch'])]
        if not same:
            rows.append(row)
        elif row['seconds'] < same[0]['seconds']:
            rows[rows.index(same[0])] = row
    print(f'| script | EVAL_BATCH | steps | images | s | img/s | ratio | mIoU |  ({torch.get_num_threads()} threads)')
    print('|---|---|---|---|---|---|---|---|')
    for row in rows:
        base = next(r for r in rows if r['script'] == row['script'] and r['eval_batch'] == rows[0]['eval_batch'])
        print(f"| {row['script']} | {row['eval_batch']} | {row['steps']} | {row['images']} | {row['seconds']} | "
              f"{row['img_per_sec']} | {row['img_per_sec'] / base['img_per_sec']:.2f} | {row['mIoU']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        load = dict(zip(('1min', '5min', '15min'), os.getloadavg()))  # other work on the machine during the run
        command = ' '.join(['python -m tools.bench.eval_batch_speed', *(sys.argv[1:] if argv is None else argv)])
        Path(args.json).write_text(json.dumps(dict(command=command, threads=torch.get_num_threads(),
                                                   cpus=os.cpu_count(), loadavg_at_end=load, rows=rows),
                                              indent=2) + '\n')


if __name__ == '__main__':
    main()
