"""The table and charts of a benchmark run by bench.sh.

    python -m tools.bench.bench collect work_dirs/bench/NAME [--out benchmarks/NAME] [--flops-size 512,512]
    python -m tools.bench.bench error STDERR_LOG     (for bench.sh; its other helpers: tools/bench/bench_sh.py)

bench.sh trains each model in work_dirs/bench/NAME/<model>/ and leaves there the script's
summary.json (when it got that far), its stdout.log and stderr.log, and bench_run.txt (script,
variant, exit code, seconds, command). `collect` turns every such folder into one row of
benchmarks/NAME/results.csv and results.md: the measured speed, memory and mIoU beside the
reference recipe's mIoU, memory and fps (the script's REFERENCE dict), parameters and FLOPs
(tools/bench/complexity.py, cached), and for a failed model its status and error. It also draws
speed_memory.png and miou_vs_speed.png (tools/bench/plots.py) beside the table.

Why the loop is bash (bench.sh) and the rest is here: the loop is what one edits for a cluster
(launcher, environment, which models) and reads best as a dozen shell lines; parsing logs, tables
and pictures read better in Python.
"""
import argparse
import csv
import json
import re
import sys
from pathlib import Path

from common import cli, scripts
from tools.bench import complexity
from common.errors import SetupError, reported

RUN_FILE = 'bench_run.txt'      # written by bench.sh next to each run
BENCH_FILE = 'bench.txt'        # written by bench.sh in the benchmark folder

# CSV columns, in order.
FIELDS = ['model', 'variant', 'status', 'params_m', 'gflops', 'img_per_sec', 'sec_per_iter', 'data_time_share',
          'max_mem_mb', 'max_rss_mb', 'mIoU', 'iters_done', 'world_size', 'batch_per_gpu', 'total_batch',
          'crop_size', 'precision', 'startup_s', 'ref_mIoU', 'ref_mIoU_ms', 'ref_mem_gb', 'ref_fps', 'ref_total_batch', 'recipe',
          'device', 'torch', 'mmcv', 'mmseg', 'wall_s', 'bench_s', 'exit_code', 'error', 'complexity_error',
          'work_dir']


# ---------------------------------------------------------------- reading one run

def key_values(path):
    """`key=value` lines (bench.sh's files) as a dict; {} if the file is missing."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split('=', 1) for line in lines if '=' in line)


_EXCEPTION_LINE = re.compile(r'^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b')


def error_from_stderr(text):
    """The one line that says why a run failed: the script's 'ERROR: ...' (plus its '-> fix'), else
    the exception line of the last traceback (not torchrun's ChildFailedError wrapper), else the last
    line."""
    lines = [re.sub(r'^\[(default)?rank\d+\]:\s?', '', line).rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith('ERROR:'):
            fix = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].strip().startswith('->') else ''
            return f'{line[len("ERROR:"):].strip()} {fix}'.strip()
    exceptions = [line for line in lines if _EXCEPTION_LINE.match(line) and 'ChildFailedError' not in line]
    if exceptions:
        return exceptions[-1]
    return lines[-1] if lines else ''


def tail(path, count=6):
    try:
        lines = [line for line in Path(path).read_text(errors='replace').splitlines() if line.strip()]
    except OSError:
        return []
    return lines[-count:]


def reference_for(module, variant):
    """The reference numbers of `variant` (its BACKBONE, or HEAD: scripts.variant_setting) of a script
    module (scripts.reference_for); {} without one."""
    if module is None:
        return {}
    return scripts.reference_for(vars(module), {scripts.variant_setting(vars(module)): variant} if variant else {})


def read_run(run_dir, root='.', flops_size=complexity.SIZE, cache=complexity.CACHE, with_complexity=True):
    """One row of the table from a bench run folder."""
    run_dir = Path(run_dir)
    info = key_values(run_dir / RUN_FILE)
    try:
        summary = json.loads((run_dir / 'summary.json').read_text())
    except (OSError, ValueError):
        summary = {}
    script = info.get('script') or f'train_{summary.get("model", run_dir.name)}'
    try:
        module = scripts.load(script, root)
    except Exception:  # a missing or broken script still gets its row
        module = None
    variant = (summary.get('variant') or info.get('variant')
               or (scripts.variant_name(vars(module)) if module else None))

    exit_code = int(info['exit_code']) if info.get('exit_code', '').lstrip('-').isdigit() else None
    finished = summary.get('status') == 'finished' and exit_code in (0, None)
    timed_out = info.get('timed_out') == '1' and not finished
    error = ''
    if timed_out:  # stopped like a pre-emption: its checkpoint is kept, the same command resumes
        error = (f"timed out after {info.get('seconds', '?')} s (bench.sh --timeout) at iteration "
                 f"{summary.get('iters_done', '?')}; checkpoint kept in {run_dir}")
    elif not finished:
        error = error_from_stderr((run_dir / 'stderr.log').read_text(errors='replace')
                                  if (run_dir / 'stderr.log').is_file() else '')
        if not error and str(summary.get('status', '')).startswith('failed: '):
            error = summary['status'][len('failed: '):]
        error = error or (f'exit code {exit_code}' if exit_code else 'no summary.json written')

    ref = reference_for(module, variant)
    row = dict(model=script.removeprefix('train_'), variant=variant, status='ok' if finished else 'timed out' if timed_out else 'failed',
               exit_code=exit_code, error=error, work_dir=str(run_dir), bench_s=info.get('seconds'),
               ref_mIoU=ref.get('mIoU'), ref_mIoU_ms=ref.get('mIoU_ms'), ref_mem_gb=ref.get('mem_gb'),
               ref_fps=ref.get('fps'), ref_total_batch=ref.get('total_batch'),
               recipe=ref.get('config') or summary.get('recipe'))
    for key in ('img_per_sec', 'sec_per_iter', 'data_time_share', 'max_mem_mb', 'max_rss_mb', 'mIoU', 'iters_done',
                'world_size', 'batch_per_gpu', 'total_batch', 'precision', 'startup_s', 'device', 'torch', 'mmcv', 'mmseg', 'wall_s'):
        row[key] = summary.get(key)
    if summary.get('crop_size'):
        row['crop_size'] = 'x'.join(str(v) for v in summary['crop_size'])
    if with_complexity and module is not None:
        try:
            found = complexity.lookup(script, variant, flops_size, cache, root)
            row.update(params_m=round(found['params'] / 1e6, 2), gflops=round(found['flops'] / 1e9, 1))
        except Exception as exc:
            row['complexity_error'] = f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}'
    return row


def find_runs(bench_dir):
    """Run folders of a benchmark: those bench.sh wrote bench_run.txt into, or that hold a summary."""
    if not Path(bench_dir).is_dir():
        raise SetupError(f'no benchmark folder {bench_dir}', 'pass the work_dirs/bench/NAME folder bench.sh wrote')
    return sorted(p for p in Path(bench_dir).iterdir()
                  if p.is_dir() and ((p / RUN_FILE).is_file() or (p / 'summary.json').is_file()))


# ---------------------------------------------------------------- the table

def _fmt(value, spec='', none='-'):
    if value in (None, ''):
        return none
    return format(value, spec) if spec else str(value)


def _memory_cell(row):
    if row.get('max_mem_mb') not in (None, ''):
        return f'{row["max_mem_mb"] / 1024:.2f}'
    if row.get('max_rss_mb') not in (None, ''):
        return f'{row["max_rss_mb"] / 1024:.2f} (RSS)'
    return '-'


def _shared(rows, key):
    """The value every finished run has for `key`, or None if they differ."""
    values = {str(r.get(key)) for r in rows if r['status'] == 'ok'}
    return values.pop() if len(values) == 1 else None


def markdown(rows, bench_info, flops_size, charts=()):
    name = bench_info.get('name') or 'benchmark'
    done = [r for r in rows if r['status'] == 'ok']
    lines = [f'# Benchmark: {name}', '']
    facts = []
    if bench_info.get('date'):
        facts.append(f'run {bench_info["date"]}')
    for label, key in (('device', 'device'), ('iterations', 'iters_done'), ('GPUs per model', 'world_size'),
                       ('crop', 'crop_size'), ('precision', 'precision')):
        value = _shared(done, key)
        if value is not None:
            facts.append(f'{label}: {value}')
    versions = [f'{k} {_shared(done, k)}' for k in ('torch', 'mmcv', 'mmseg') if _shared(done, k)]
    if versions:
        facts.append(', '.join(versions))
    if bench_info.get('data_root'):
        evaluated = len(list(Path(bench_info.get('train_root', bench_info['data_root']), 'images', 'validation')
                             .glob('*.jpg')))
        facts.append(f'data: {bench_info["data_root"]} (the final evaluation on {evaluated} validation images)')
    if bench_info.get('script_flags'):
        facts.append(f'script flags: `{bench_info["script_flags"]}`')
    lines += [f'- {fact}' for fact in facts] + ['']

    size = f'{flops_size[0]}x{flops_size[1]}'
    header = ['model', 'variant', 'params (M)', f'GFLOPs {size}', 'img/s', 's/iter', 'data wait', 'batch',
              'peak mem (GB)', 'mIoU', 'ref mIoU', 'ref mem (GB)', 'ref fps', 'status']
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        share = f'{r["data_time_share"] * 100:.0f}%' if r.get('data_time_share') not in (None, '') else '-'
        batch = f'{r["batch_per_gpu"]}x{r["world_size"]}' if r.get('batch_per_gpu') else '-'
        cells = [r['model'], _fmt(r.get('variant')), _fmt(r.get('params_m'), '.2f'), _fmt(r.get('gflops'), '.1f'),
                 _fmt(r.get('img_per_sec'), '.2f'), _fmt(r.get('sec_per_iter'), '.3f'), share, batch,
                 _memory_cell(r), _fmt(r.get('mIoU'), '.2f'), _fmt(r.get('ref_mIoU')), _fmt(r.get('ref_mem_gb')),
                 _fmt(r.get('ref_fps')), r['status']]
        lines.append('| ' + ' | '.join(cells) + ' |')

    failed = [r for r in rows if r['status'] != 'ok']
    if failed:
        lines += ['', '## Failed', '']
        for r in failed:
            lines.append(f'- **{r["model"]}** (exit code {_fmt(r.get("exit_code"))}): {r["error"]}  ')
            lines.append(f'  log: `{r["work_dir"]}/stderr.log`; its last lines:')
            lines += ['', '  ```'] + [f'  {line}' for line in tail(Path(r['work_dir']) / 'stderr.log')] + ['  ```', '']
    unmeasured = [r for r in rows if r.get('complexity_error')]
    if unmeasured:
        lines += ['', 'Parameters/FLOPs not measured: ' + '; '.join(
            f'{r["model"]}: {r["complexity_error"]}' for r in unmeasured)]

    lines += ['', '## Columns', '',
              f'- params, GFLOPs: whole-image inference of one {size} image, auxiliary head excluded '
              '(tools/bench/complexity.py; mmengine counts one multiply-add as one FLOP).',
              '- img/s, s/iter: training throughput of all GPUs together, median of the iterations after '
              'start-up; data wait: the share of an iteration spent waiting for the data loader.',
              '- batch: images per GPU x GPUs. peak mem: `torch.cuda.max_memory_allocated` on one GPU; '
              'on a CPU run the process\'s peak RSS instead, marked (RSS).',
              '- mIoU: the evaluation at the end of this short run (on the validation images above), a '
              'check that training and evaluation work, not a result.',
              '- ref mIoU / mem / fps: the reference recipe (the script\'s REFERENCE dict, from '
              'MMSegmentation\'s configs/<algo>/README.md): single-scale mIoU after the full schedule, training '
              'memory per GPU at the recipe\'s batch (usually 4/GPU; compare with batch above), and '
              '*inference* fps on the README\'s device (mostly V100), so not the same quantity as img/s.',
              '- Every column, and the error of each failed model, is in results.csv.']
    for title, chart in charts:
        lines += ['', f'![{title}]({Path(chart).name})']
    return '\n'.join(lines) + '\n'


def write_csv(rows, path):
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ('' if row.get(k) is None else row.get(k)) for k in FIELDS})


def collect(bench_dir, out_dir, flops_size=complexity.SIZE, cache=complexity.CACHE, with_complexity=True,
            root='.'):
    """Write results.csv, results.md, speed_memory.png and miou_vs_speed.png; returns the rows."""
    from tools.bench import plots
    bench_dir, out_dir = Path(bench_dir), Path(out_dir)
    runs = find_runs(bench_dir)
    if not runs:
        raise SetupError(f'no benchmark runs in {bench_dir} (folders with {RUN_FILE} or summary.json)',
                         'pass the work_dirs/bench/NAME folder of a bash bench.sh run')
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in runs:
        rows.append(read_run(run, root, flops_size, cache, with_complexity))
        print(f'  {run.name}: {rows[-1]["status"]}', flush=True)
    bench_info = key_values(bench_dir / BENCH_FILE)
    bench_info.setdefault('name', bench_dir.name)
    title = f'{bench_info["name"]}: {_shared(rows, "device") or ""}'.rstrip(': ')
    charts = [('training img/s and peak memory per model', plots.speed_memory(rows, out_dir / 'speed_memory.png',
                                                                              title)),
              ('reference mIoU against measured img/s', plots.miou_vs_speed(rows, out_dir / 'miou_vs_speed.png',
                                                                            title))]
    write_csv(rows, out_dir / 'results.csv')
    (out_dir / 'results.md').write_text(markdown(rows, bench_info, flops_size, charts))
    return rows


# ---------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    table = commands.add_parser('collect', help='results.csv, results.md and charts from a bench folder')
    table.add_argument('bench_dir', help='work_dirs/bench/NAME (one folder per model)')
    table.add_argument('--out', help='output folder (default benchmarks/NAME)')
    table.add_argument('--flops-size', type=cli.parse_size, default=complexity.SIZE, metavar='H,W',
                       help='input size of the parameter/FLOP count (default 512,512)')
    table.add_argument('--cache', default=complexity.CACHE, help=f'complexity cache (default {complexity.CACHE})')
    table.add_argument('--no-complexity', action='store_true', help='leave parameters and FLOPs out')
    why = commands.add_parser('error', help="the line of a run's stderr that says why it failed")
    why.add_argument('stderr_log')
    args = parser.parse_args(argv)

    if args.command == 'error':
        print(error_from_stderr(Path(args.stderr_log).read_text(errors='replace')))
        return 0
    out = Path(args.out or Path('benchmarks') / Path(args.bench_dir).name)
    print(f'collecting {args.bench_dir} -> {out}', flush=True)
    with reported():
        rows = collect(args.bench_dir, out, args.flops_size, args.cache, not args.no_complexity)
    print(f'wrote {out}/results.csv, results.md, speed_memory.png, miou_vs_speed.png '
          f'({sum(r["status"] == "ok" for r in rows)} ok, {sum(r["status"] != "ok" for r in rows)} failed)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
