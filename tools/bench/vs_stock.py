"""Our scripts beside stock MMSegmentation, on the same machine and data: img/s per GPU and memory.

    python -m tools.bench.vs_stock --data-root data/ade/ADEChallengeData2016 \\
        [--scripts fcn,pspnet,deeplabv3plus,upernet,segformer,mask2former] [--batches stock,2] \\
        [--iters 60] [--stock-script tools/bench/stock_mmseg_train.py] [--out benchmarks/h100] \\
        [-- flags for our scripts, e.g. --precision fp32]

For each script and per-GPU batch ('stock': the batch of the script's recipe config, e.g. 4 for
PSPNet; or a number), it runs the stock baseline (`tools/bench/stock_mmseg_train.py RECIPE_CONFIG`: the
official config as the wheel's tools/train.py trains it, fp32, no pretrained weights, in a process that
imports nothing of this project) and then our script with its defaults (`--no-pretrained --max-iters
ITERS`: the fast path) on one GPU, one after the other, each in a process of its own. Both report the
median s/iter after their warm-up iterations and the peak allocated memory. Writes vs_stock.json
(every figure, both commands) and vs_stock.md (the table: stock img/s, ours, ratio, memory of both)
in --out. The issue's bar: ratio >= 2 at both batches, memory not above stock.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.errors import SetupError, reported

CORE = ('fcn', 'pspnet', 'deeplabv3plus', 'upernet', 'segformer', 'mask2former')
ROOT = Path(__file__).resolve().parents[2]
STOCK_SCRIPT = Path(__file__).resolve().with_name('stock_mmseg_train.py')
# The environment this process was started with, read at import: a run of ours sets variables of its
# own (TORCH_NCCL_ASYNC_ERROR_HANDLING, CUDA_VISIBLE_DEVICES for DEVICE=cpu, ...) that the processes
# started from here must not inherit.
LAUNCH_ENV = dict(os.environ)


def reference_config(script):
    """The recipe config a script mirrors (its REFERENCE['config']), and that config's per-GPU batch."""
    import mmseg
    from mmengine.config import Config
    from common import scripts
    config = scripts.load(script).REFERENCE['config']
    path = Path(mmseg.__file__).parent / '.mim' / 'configs' / config
    return config, int(Config.fromfile(str(path)).train_dataloader.batch_size)


def stock_command(configs, data_root, iters, warmup, batch, workers=None, script=STOCK_SCRIPT):
    """The baseline's command line: every config in `configs`, one after the other in its one process."""
    cmd = [sys.executable, str(script), *configs, '--data-root', str(data_root), '--iters', str(iters),
           '--warmup', str(warmup), '--batch-per-gpu', str(batch)]
    return cmd + (['--workers', str(workers)] if workers is not None else [])


def relative(arg):
    """A path inside the repository as seen from its root; anything else as it is."""
    path = Path(str(arg))
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(arg)


def shown(cmd):
    """A command as a user types it from the repository root: `python` and repository-relative paths."""
    return ' '.join(['python', *map(relative, cmd[1:])])


def stock_lines(text):
    """The baseline's JSON lines (one per config: its figures, or its `error`), in order."""
    rows = []
    for line in text.splitlines():
        if line.startswith('{'):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and 'config' in row:
                rows.append(row)
    return rows


def run(cmd, log, timeout, started=None):
    """Run `cmd` from the repository root, in the environment this process was started with and a
    session of its own, its output to `log` as it comes. Past `timeout` seconds the whole session is
    killed (its data loader workers too). `started(pid)`, when given, learns the session's id at
    once (stop_session: what a restarted caller uses should this process die while it waits).
    Returns (exit code: 124 when stopped, output)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, 'w') as out:
        out.write(' '.join(map(str, cmd)) + '\n')
        out.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=LAUNCH_ENV,
                                start_new_session=True)
        try:
            if started:
                started(proc.pid)
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = 124
        finally:
            if proc.poll() is None:  # past its limit, or this process is being stopped: never left behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if code == 124:
            out.write(f'\nstopped after its limit of {timeout:.0f} s\n')
    return code, Path(log).read_text(errors='replace')


def stop_session(pid):
    """Kill what is left of a session `run` started (by its leader's id), if anything is."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_stock(configs, log, limit, started=None, **settings):
    """The baseline for every config of `configs` (name -> config) in one process (stock_command with
    `settings`; `run`, so its own session, log and time limit): a row per name from its JSON lines,
    and what the process did not reach failed with the process's reason. One process because a fresh
    one pays the imports and the CUDA context: once here, not once a config."""
    from tools.bench import bench
    cmd = stock_command(list(configs.values()), **settings)
    start = time.time()
    code, out = run(cmd, log, limit, started)
    found = {row['config']: row for row in stock_lines(out)}
    reason = f'stopped after its limit of {limit:.0f} s' if code == 124 else (
        bench.error_from_stderr(out) or f'exit code {code}')
    models = {}
    for name, config in configs.items():
        line = found.get(config, {})
        ok = bool(line.get('sec_per_iter'))
        models[name] = dict(status='finished' if ok else 'failed',
                            error=None if ok else line.get('error') or f'not reached: {reason}', config=config,
                            command=shown(stock_command([config], **settings)),
                            **{k: line.get(k) for k in ('batch_per_gpu', 'sec_per_iter', 'img_per_sec', 'data_time',
                                                        'max_mem_mb', 'wall_s', 'device', 'stock_check')})
    checks = [row['stock_check']['stock'] for row in models.values() if row['stock_check']]
    result = dict(status='finished' if code == 0 else 'failed', error=None if code == 0 else reason,
                  command=shown(cmd), seconds=round(time.time() - start, 1), limit_s=round(limit),
                  stock=all(checks) if checks else None, models=models)
    if code:
        result['log_tail'] = bench.tail(log, 12)
    return result


def compare(script, batch, args, ours_flags, work):
    """One row: the stock baseline and our script at `batch` images per GPU."""
    config, stock_batch = reference_config(script)
    batch = stock_batch if batch == 'stock' else int(batch)
    name = f'{Path(script).stem.removeprefix("train_")}_b{batch}'
    row = dict(model=Path(script).stem.removeprefix('train_'), config=config, batch_per_gpu=batch)

    stock_cmd = stock_command([config], args.data_root, args.iters, args.warmup, batch, script=args.stock_script)
    code, out = run(stock_cmd, work / f'{name}_stock.log', args.timeout)
    row['stock_cmd'] = ' '.join(stock_cmd[1:])
    stock = (stock_lines(out) or [{}])[-1]
    if code == 0 and stock.get('sec_per_iter'):
        row.update(stock_img_per_sec=stock['img_per_sec'], stock_sec_per_iter=stock['sec_per_iter'],
                   stock_mem_mb=stock['max_mem_mb'], stock_data_time=stock['data_time'], device=stock['device'],
                   stock_check=stock['stock_check'])
    else:
        row['stock_error'] = stock.get('error') or (out.strip().splitlines()[-1] if out.strip() else f'exit {code}')

    ours_dir = work / name
    # Ours evaluates at its last iteration (mmengine's loop does): on one validation image, so the
    # comparison is of training alone. The training split is the same files (symlinks).
    from tools.bench.bench_sh import val_subset
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
    parser.add_argument('--stock-script', type=Path, default=STOCK_SCRIPT, help='the stock baseline (default: '
                        'tools/bench/stock_mmseg_train.py)')
    parser.add_argument('--timeout', type=int, default=1800, help='seconds per run')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/vs_stock'))
    parser.add_argument('--work', type=Path, default=Path('work_dirs/vs_stock'))
    args, ours_flags = parser.parse_known_args(argv)
    ours_flags = [f for f in ours_flags if f != '--']
    with reported():
        if not args.stock_script.is_file():
            raise SetupError(f'the stock baseline {args.stock_script} does not exist',
                             'leave --stock-script out for tools/bench/stock_mmseg_train.py, or name an existing file')
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
    commands = [f'python -m tools.bench.vs_stock {" ".join(sys.argv[1:] if argv is None else argv)}']
    (args.out / 'vs_stock.json').write_text(json.dumps(dict(rows=rows, commands=commands), indent=1))
    (args.out / 'vs_stock.md').write_text(markdown(rows, commands))
    print(markdown(rows, commands))
    return 0 if all(row.get('ratio') for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
