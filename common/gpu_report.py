"""gpu_check.md from the GPU check's results (common/gpu_check.py), and its one-line progress reports.

    python -m common.gpu_report benchmarks/nvidia-h200/gpu_check.json     # rewrite gpu_check.md beside it
"""
import json
import sys
from pathlib import Path

BUDGET_NOTE = (
    'Why the budgets fit 8 minutes on one H200 (estimated from ../shared/reference/h100_stock_baseline.md; '
    'the H200 has the H100\'s compute and faster memory): stock MMSegmentation at batch 2 takes 0.04-0.34 s '
    'an iteration on these configs (about 0.67 s for one iteration of all six), so 30 iterations of each are '
    'about 20 s of stock iterations and less of ours. The baseline\'s 31 s of start-up per run is mostly '
    'what a fresh process pays once (imports, CUDA context, cuDNN tuning of each shape); in this one process '
    'a run adds about 4-6 s (Runner, model build, loader workers, its first iteration). Smoke: 39 scripts x '
    'about 6 s = about 235 s (budget 250); vs_stock: 12 runs x about 5 s + 35 s of iterations = about 95 s '
    '(120); eval_precision: 4 evaluations of 16 images, about 15 s (30); with the wheels\' install (about 20 s), '
    'the imports and env (about 10 s) and the data (about 5 s): about 6.3 minutes of the 7.5-minute deadline, '
    'which leaves 30 s before the 8-minute limit of the call. What does not fit is recorded as skipped.')


def brief(row):
    """One line: a run's or a measurement's status and main figures."""
    if 'ours' in row:  # a vs_stock pair
        figures = [f'{who} {row[who]["img_per_sec"]} img/s' for who in ('ours', 'stock') if row[who].get('img_per_sec')]
        figures += [f'ratio {row["ratio"]}'] if row.get('ratio') else []
        notes = [f'{who}: {row[who].get("error") or row[who].get("reason")}' for who in ('ours', 'stock')
                 if row[who].get('error') or row[who].get('reason')]
        return f'{row["status"]}, ' + ', '.join(figures + notes)
    figures = [f'{row[k]}{unit}' for k, unit in (
        ('device', ''), ('sec_per_iter', ' s/iter'), ('img_per_sec', ' img/s'), ('peak_mem_mb', ' MB peak'),
        ('precision', ''),
        ('mIoU_diff', ' mIoU difference'), ('speedup', 'x the speed'), ('armed_iters', ' iterations checked'),
        ('finished', ' finished'), ('failed', ' failed'), ('skipped', ' skipped')) if row.get(k) not in (None, '')]
    if row.get('loss_last') is not None:
        figures.append(f'loss {row["loss_first"]} -> {row["loss_last"]}')
    note = row.get('error') or row.get('reason')
    return ', '.join([row.get('status', '?'), *figures] + ([note] if note else []))


def _cell(value):
    if value is None or value == '':
        return '-'
    if isinstance(value, float):
        return f'{value:.4g}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value).replace('|', '\\|').replace('\n', ' ')


def _table(header, rows):
    return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
            *['| ' + ' | '.join(_cell(c) for c in row) + ' |' for row in rows], '']


def _note(row):
    return row.get('error') or row.get('reason') or ''


def _smoke(stage):
    rows = [[name, r['status'], r.get('precision'), r.get('loss_first'), r.get('loss_last'), r.get('sec_per_iter'),
             r.get('img_per_sec'), r.get('peak_mem_mb'), r.get('startup_s'), r.get('seconds'), _note(r)]
            for name, r in stage.get('scripts', {}).items()]
    return _table(['script', 'status', 'precision', 'loss first', 'loss last', 's/iter', 'img/s', 'peak MB',
                   'start-up s', 'seconds', 'error'], rows)


def _vs_stock(stage):
    rows = []
    for name, r in stage.get('models', {}).items():
        ours, stock = r.get('ours', {}), r.get('stock', {})
        notes = '; '.join(f'{who}: {_note(x)}' for who, x in (('ours', ours), ('stock', stock)) if _note(x))
        rows.append([name, r['status'], stock.get('img_per_sec'), ours.get('img_per_sec'), r.get('ratio'),
                     stock.get('sec_per_iter'), ours.get('sec_per_iter'), stock.get('max_mem_mb'),
                     ours.get('peak_mem_mb'), ours.get('precision'), notes or _note(r)])
    return _table(['model', 'status', 'stock img/s', 'ours img/s', 'ratio', 'stock s/iter', 'ours s/iter',
                   'stock MB', 'ours MB', 'ours precision', 'note'], rows)


def _compare(stage, what):
    rows = []
    for name, r in stage.get('models', {}).items():
        runs = r.get('runs', {})
        values = list(runs.values())
        first, last = (values[0] if values else {}), (values[-1] if len(values) > 1 else {})
        rows.append([name, r['status'], *(x.get('mIoU') for x in (first, last)), r.get('mIoU_diff'), r.get('mAcc_diff'),
                     r.get('aAcc_diff'), *(x.get('img_per_sec') for x in (first, last)), first.get('images'),
                     r.get('weights'), _note(r) or '; '.join(_note(x) for x in runs.values() if _note(x))])
    a, b = what
    return _table(['model', 'status', f'{a} mIoU', f'{b} mIoU', 'mIoU diff', 'mAcc diff', 'aAcc diff', f'{a} img/s',
                   f'{b} img/s', 'images', 'weights', 'note'], rows)


def _sync_free(stage):
    rows = [[name, r['status'], r.get('armed_iters'), r.get('iters'), r.get('sec_per_iter'),
             (r.get('sync_error') or _note(r)).splitlines()[-1] if (r.get('sync_error') or _note(r)) else '']
            for name, r in stage.get('scripts', {}).items()]
    return _table(['script', 'status', 'iterations checked', 'iterations', 's/iter', 'error'], rows)


SECTIONS = [('smoke', 'Every script: a few iterations of its defaults', _smoke),
            ('vs_stock', 'The core scripts beside stock MMSegmentation (same batch, data, iterations)', _vs_stock),
            ('eval_precision', 'Evaluation in fp32 and bf16 on the same weights', lambda s: _compare(s, ('fp32', 'bf16'))),
            ('sync_free', 'Iterations without a host sync (set_sync_debug_mode error)', _sync_free),
            ('eval_batch', 'Batched evaluation', lambda s: _compare(s, ('batch 1', 'batch N')))]


def markdown(r):
    gpu, versions, stages, plan = r.get('gpu', {}), r.get('versions', {}), r.get('stages', {}), r.get('plan', {})
    lines = [f'# GPU check: {gpu.get("name", "(no GPU recorded)")}', '']
    if r.get('dry_run'):
        lines += ['**Dry run** (tiny sizes, the CPU unless a GPU is there): the figures show that the code paths '
                  'work; they measure nothing.', '']
    if not r.get('finished'):
        lines += ['**Incomplete**: written while the check was running (or after it was cut short).', '']
    data = stages.get('data', {})
    facts = [f'command (repository root): `{r.get("command")}`',
             f'started {r.get("started_utc")}, {r.get("elapsed_s")} s in all (deadline {r.get("deadline_min")} min'
             + (f', wheels installed in {r["install_s"]:.0f} s' if r.get('install_s') else '')
             + (f', resumed {r["resumes"]} times' if r.get('resumes') else '') + f'); commit {r.get("commit")}',
             'GPU: ' + ', '.join(f'{k} {gpu[k]}' for k in ('name', 'count', 'memory_gib', 'capability', 'multiprocessors',
                                                          'driver', 'torch_cuda', 'cudnn', 'power_limit') if gpu.get(k)),
             'versions: ' + ', '.join(f'{k} {v}' for k, v in versions.items()),
             f'data: synthetic ADE20K layout, {data.get("train_images")} training + {data.get("val_images")} validation '
             f'JPEGs of {data.get("image_size")}, labels 0..{data.get("classes")}',
             f'plan: crop {plan.get("crop")}, batch {plan.get("batch")}, smoke {plan.get("smoke_iters")} iterations, '
             f'vs_stock {plan.get("speed_iters")} iterations (median after the first {plan.get("warmup")}), '
             f'stock: {r.get("stock_script")}']
    lines += [f'- {fact}' for fact in facts] + ['']
    budgets = r.get('budgets', {})
    lines += ['## Measurements', '', *_table(['measurement', 'status', 'seconds', 'budget s', 'planned / minimum s', 'detail'], [
        [name, s.get('status'), s.get('seconds'), s.get('budget_s'),
         '{planned_s} / {minimum_s}'.format(**budgets[name]) if name in budgets else None, brief(s)]
        for name, s in stages.items()])]
    if stages.get('env', {}).get('ops'):
        lines += ['mmcv ops on the device: ' + ', '.join(f'{k} {v}' for k, v in stages['env']['ops'].items()), '']
    for name, title, render in SECTIONS:
        stage = stages.get(name)
        if not stage:
            continue
        lines += [f'## {title} ({name})', '']
        if stage.get('scripts') or stage.get('models'):
            lines += render(stage)
        if _note(stage):
            lines += [f'{stage["status"]}: {_note(stage)}', '']
    commands = [row.get('command') for name in ('vs_stock', 'eval_precision', 'eval_batch')
                for model in stages.get(name, {}).get('models', {}).values()
                for row in [model.get('ours', {}), model.get('stock', {}), *model.get('runs', {}).values()]]
    smoke_rows = list(stages.get('smoke', {}).get('scripts', {}).values())
    commands = [c for c in ([smoke_rows[0].get('command')] if smoke_rows else []) + commands if c]
    if commands:
        lines += ['## Commands', '', 'What each run did, as the command that does the same alone (the check runs them '
                  'in its one process; every row\'s command is in gpu_check.json; its smoke runs are like the first):',
                  '', *[f'    {c}' for c in commands], '']
    return '\n'.join(lines + ['## Budgets', '', BUDGET_NOTE, ''])


def main(argv=None):
    path = Path((argv or sys.argv[1:])[0])
    out = path.with_suffix('.md')
    out.write_text(markdown(json.loads(path.read_text())))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
