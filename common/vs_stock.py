"""Our scripts beside stock MMSegmentation, on the same machine and data: img/s per GPU and memory.

    python -m common.vs_stock --data-root data/ade/ADEChallengeData2016 \\
        [--scripts fcn,pspnet,deeplabv3plus,upernet,segformer,mask2former] [--batches stock,2] \\
        [--iters 60] [--stock-script ../shared/bench/stock_mmseg_train.py] [--out benchmarks/h100] \\
        [-- flags for our scripts, e.g. --precision fp32]

For each script and per-GPU batch ('stock': the batch of the script's recipe config, e.g. 4 for
PSPNet; or a number), it runs the stock baseline (`stock_mmseg_train.py RECIPE_CONFIG`: the official
config as `tools/train.py` trains it, fp32, no pretrained weights) and then our script with its
defaults (`--no-pretrained --max-iters ITERS`: the fast path) on one GPU, one after the other. Both
report the median s/iter after their warm-up iterations and the peak allocated memory. Writes
vs_stock.json (every figure, both commands) and vs_stock.md (the table: stock img/s, ours, ratio,
memory of both) in --out. The issue's bar: ratio >= 2 at both batches, memory not above stock.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

CORE = ('fcn', 'pspnet', 'deeplabv3plus', 'upernet', 'segformer', 'mask2former')
ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (CI, this machine), or shared/ inside it (a copy on a GPU machine).
STOCK_SCRIPT = next((p for p in (ROOT.parent / 'shared' / 'bench' / 'stock_mmseg_train.py',
                                 ROOT / 'shared' / 'bench' / 'stock_mmseg_train.py') if p.is_file()),
                    ROOT.parent / 'shared' / 'bench' / 'stock_mmseg_train.py')


def reference_config(script):
    """The recipe config a script mirrors (its REFERENCE['config']), and that config's per-GPU batch."""
    import mmseg
    from mmengine.config import Config
    from common import scripts
    config = scripts.load(script).REFERENCE['config']
    path = Path(mmseg.__file__).parent / '.mim' / 'configs' / config
    return config, int(Config.fromfile(str(path)).train_dataloader.batch_size)


def last_json_line(text):
    for line in reversed(text.splitlines()):
        if line.startswith('{'):
            return json.loads(line)
    raise ValueError('no JSON line in the output')


def run(cmd, log, timeout):
    """Run `cmd` from the repository root; its output goes to `log`. Returns (exit code, output)."""
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, out = 124, f'{err}\n{err.stdout or ""}{err.stderr or ""}'
    Path(log).write_text(' '.join(map(str, cmd)) + '\n' + out)
    return code, out


def compare(script, batch, args, ours_flags, work):
    """One row: the stock baseline and our script at `batch` images per GPU."""
    config, stock_batch = reference_config(script)
    batch = stock_batch if batch == 'stock' else int(batch)
    name = f'{Path(script).stem.removeprefix("train_")}_b{batch}'
    row = dict(model=Path(script).stem.removeprefix('train_'), config=config, batch_per_gpu=batch)

    stock_cmd = [sys.executable, str(args.stock_script), config, '--data-root', args.data_root,
                 '--iters', str(args.iters), '--warmup', str(args.warmup), '--batch-per-gpu', str(batch)]
    code, out = run(stock_cmd, work / f'{name}_stock.log', args.timeout)
    row['stock_cmd'] = ' '.join(stock_cmd[1:])
    if code == 0:
        stock = last_json_line(out)
        row.update(stock_img_per_sec=stock['img_per_sec'], stock_sec_per_iter=stock['sec_per_iter'],
                   stock_mem_mb=stock['max_mem_mb'], stock_data_time=stock['data_time'], device=stock['device'])
    else:
        row['stock_error'] = out.strip().splitlines()[-1] if out.strip() else f'exit {code}'

    ours_dir = work / name
    # Ours evaluates at its last iteration (mmengine's loop does): on one validation image, so the
    # comparison is of training alone. The training split is the same files (symlinks).
    from common.bench_sh import val_subset
    ours_root = str(val_subset(args.data_root, 1, work / 'data'))
    ours_cmd = [sys.executable, script, '--data-root', ours_root, '--work-dir', str(ours_dir),
                '--no-pretrained', '--no-resume', '--max-iters', str(args.iters), '--val-interval', str(args.iters),
                '--batch-per-gpu', str(batch), *ours_flags]
    code, out = run(ours_cmd, work / f'{name}_ours.log', args.timeout)
    row['ours_cmd'] = ' '.join(ours_cmd[1:])
    summary_path = ours_dir / 'summary.json'
    if code == 0 and summary_path.is_file():
        ours = json.loads(summary_path.read_text())
        row.update(ours_img_per_sec=ours['img_per_sec'], ours_sec_per_iter=ours['sec_per_iter'],
                   ours_mem_mb=ours['max_mem_mb'], ours_data_time_share=ours['data_time_share'],
                   precision=ours['precision'], startup_s=ours.get('startup_s'), ours_wall_s=ours['wall_s'])
    else:
        row['ours_error'] = out.strip().splitlines()[-1] if out.strip() else f'exit {code}'
    if row.get('stock_img_per_sec') and row.get('ours_img_per_sec'):
        row['ratio'] = round(row['ours_img_per_sec'] / row['stock_img_per_sec'], 2)
    return row


def markdown(rows, commands):
    def cell(row, key):
        value = row.get(key)
        return '' if value is None else str(value)
    lines = ['| model | batch/GPU | stock img/s | ours img/s | ratio | stock mem MB | ours mem MB | '
             'ours data_time share | ours precision | ours start-up s |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        errors = '; '.join(f'{who}: {row[f"{who}_error"]}' for who in ('stock', 'ours') if row.get(f'{who}_error'))
        lines.append('| ' + ' | '.join([row['model'], str(row['batch_per_gpu'])] + [
            cell(row, k) for k in ('stock_img_per_sec', 'ours_img_per_sec', 'ratio', 'stock_mem_mb', 'ours_mem_mb',
                                   'ours_data_time_share', 'precision', 'startup_s')]) + ' |'
                     + (f' {errors}' if errors else ''))
    return '\n'.join(lines + ['', 'Commands (from the repository root):', '', *[f'    {c}' for c in commands], ''])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', required=True)
    parser.add_argument('--scripts', default=','.join(CORE), help='models, comma separated (train_<model>.py)')
    parser.add_argument('--batches', default='stock,2', help="per-GPU batches: 'stock' (the recipe's) and/or numbers")
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--warmup', type=int, default=20, help="stock: iterations left out of its median "
                        "(ours leaves out its own first few: common.train._steady)")
    parser.add_argument('--stock-script', type=Path, default=STOCK_SCRIPT)
    parser.add_argument('--timeout', type=int, default=1800, help='seconds per run')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/vs_stock'))
    parser.add_argument('--work', type=Path, default=Path('work_dirs/vs_stock'))
    args, ours_flags = parser.parse_known_args(argv)
    ours_flags = [f for f in ours_flags if f != '--']
    if not args.stock_script.is_file():
        sys.exit(f'ERROR: the stock baseline {args.stock_script} is missing\n'
                 f'  -> pass --stock-script PATH (it ships in ../shared/bench/)')
    # The runs start in the repository root: paths given relative to here must still point here.
    args.work, args.data_root = args.work.resolve(), str(Path(args.data_root).resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.scripts.split(','):
        for batch in args.batches.split(','):
            row = compare(f'train_{model}.py', batch, args, ours_flags, args.work)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith('_cmd')}), flush=True)
    commands = [f'python -m common.vs_stock {" ".join(sys.argv[1:] if argv is None else argv)}']
    (args.out / 'vs_stock.json').write_text(json.dumps(dict(rows=rows, commands=commands), indent=1))
    (args.out / 'vs_stock.md').write_text(markdown(rows, commands))
    print(markdown(rows, commands))
    return 0 if all(row.get('ratio') for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
