"""gpu_check.md from the GPU check's results (tools/gpu_check/check.py), and its one-line progress reports.

    python -m tools.gpu_check.report benchmarks/nvidia-h200/gpu_check.json     # rewrite gpu_check.md beside it
"""
import argparse
import json
from pathlib import Path

BUDGET_NOTE = (
    'Why the budgets fit the 7.5-minute deadline (one call of at most 8 minutes) on one H100 or H200 '
    '(tools/gpu_check/check.py, MEASUREMENTS). '
    'Smoke: the dry run on a 2-core CPU measured each script\'s set-up in this process (its config, checks, '
    'Runner, model build and initialisation: host work a GPU run does too) at 1.6-11.6 s, median 4.8 s, '
    '186.5 s for all 39 (benchmarks/gpu_check_cpu/smoke.json); on the GPU each adds about 2.5 s (the model '
    'moved there, loader workers, 4 iterations at 512x512, where stock MMSegmentation takes 0.04-0.34 s an '
    'iteration at batch 2 on one H100, and cuDNN\'s tuning of shapes not seen yet): 186.5 + 39 x 2.5 = about '
    '284 s of its 290. The scripts most likely to fail run first and the core six last (vs_stock trains them '
    'again), so a stage cut at its budget drops the least telling. vs_stock (100): stock in a process of '
    'its own pays its imports (4.7 s measured on the CPU) and the six configs\' set-up (25 s measured: FCN '
    '5.1, PSPNet 5.5, DeepLabV3+ 3.5, UPerNet 4.4, SegFormer 0.9, Mask2Former 5.6), the CUDA context and '
    'each config\'s first iteration with cuDNN tuning from nothing (about 2 s each, estimated), and 20 '
    'iterations of each, 0.67 s for one of all six on one H100 (13 s): about 55 s of the 60 s (60%) it is '
    'given; ours: the six scripts\' set-up as the smoke dry run measured it (27.5 s), their iterations (no '
    'more than stock\'s 13 s) and about 1 s each to start: about 46 s. eval_precision: 4 evaluations of 16 '
    'images, about 15 s (30); sync_free: 3 runs of 12 iterations, about 25 s (40); eval_batch: 4 '
    'evaluations, about 15 s (30). With the env stage (about 10 s), the data (5 s) and, on a machine '
    'without .venv, the wheels\' install (about 20 s): the planned budgets add up to 8.5 minutes, more than '
    'the 7.5 of the deadline: smoke and vs_stock (about 6.7 minutes with env and data) come first and fit; '
    'the three short stages after them get what is left, at least their minimum, or are recorded as skipped. '
    'On your own machine --deadline-min 30 runs everything.')


def brief(row):
    """One line: a run's or a measurement's status and main figures."""
    if 'ours' in row:  # a vs_stock pair
        figures = [f'{who} {row[who]["img_per_sec"]} img/s' for who in ('ours', 'stock') if row[who].get('img_per_sec')]
        figures += [f'ratio {row["ratio"]}'] if row.get('ratio') else []
        notes = [f'{who}: {row[who].get("error") or row[who].get("reason")}' for who in ('ours', 'stock')
                 if row[who].get('error') or row[who].get('reason')]
        return f'{row["status"]}, ' + ', '.join(figures + notes)
    if isinstance(row.get('stock'), bool):  # the stock process: did it train with the packages' own code?
        notes = ['its mmengine/mmseg/mmcv/torch were the packages\' own' if row['stock'] else
                 'NOT stock: a replaced function in the baseline\'s process (see stock_check)']
        notes += [row['error']] if row.get('error') else []
        return ', '.join([row['status'], f'{row.get("seconds")} s', *notes])
    figures = [f'{row[k]}{unit}' for k, unit in (
        ('device', ''), ('sec_per_iter', ' s/iter'), ('img_per_sec', ' img/s'), ('peak_mem_mb', ' MB peak'),
        ('precision', ''),
        ('mIoU_diff', ' mIoU difference'), ('speedup', 'x the speed'), ('armed_iters', ' iterations checked'),
        ('finished', ' finished'), ('failed', ' failed'), ('skipped', ' skipped')) if row.get(k) not in (None, '')]
    if row.get('loss_last') is not None:
        figures.append(f'loss {row["loss_first"]} -> {row["loss_last"]}')
    if row.get('expected_syncs'):
        figures.append(f'{sum(row["expected_syncs"].values())} syncs by nature in {len(row["expected_syncs"])} places')
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
        check = stock.get('stock_check') or {}
        rows.append([name, r['status'], stock.get('img_per_sec'), ours.get('img_per_sec'), r.get('ratio'),
                     stock.get('sec_per_iter'), ours.get('sec_per_iter'), stock.get('max_mem_mb'),
                     ours.get('peak_mem_mb'), ours.get('precision'),
                     {True: 'yes', False: 'NO'}.get(check.get('stock')), notes or _note(r)])
    lines = _table(['model', 'status', 'stock img/s', 'ours img/s', 'ratio', 'stock s/iter', 'ours s/iter',
                    'stock MB', 'ours MB', 'ours precision', 'stock unpatched', 'note'], rows)
    run = stage.get('stock', {})
    if run.get('command'):
        lines += [f'Stock ran in a process of its own ({run["status"]}, {run.get("seconds")} s of its limit of '
                  f'{run.get("limit_s")} s; log: logs/stock.log): `{run["command"]}`. "stock unpatched": that '
                  'process trained with mmengine\'s OptimWrapper.update_params, mmseg\'s accuracy, mmcv\'s '
                  'MultiScaleDeformableAttention.forward, mmengine\'s MessageHub and its own TF32 flags, and '
                  'imported nothing of this project (each row\'s stock_check in gpu_check.json).', '']
    return lines


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
    def expected(r):  # the host reads by the script's nature: how many, and where (tools/gpu_check/host_reads.py)
        found = r.get('expected_syncs') or {}
        return '; '.join(f'{count}x {place}' for place, count in found.items()) or None
    rows = [[name, r['status'], r.get('armed_iters'), r.get('iters'), r.get('sec_per_iter'), expected(r),
             (r.get('sync_error') or _note(r)).splitlines()[-1] if (r.get('sync_error') or _note(r)) else '']
            for name, r in stage.get('scripts', {}).items()]
    return _table(['script', 'status', 'iterations checked', 'iterations', 's/iter', 'syncs by nature', 'error'],
                  rows)


def works_table(r):
    """Which scripts work on this machine (the smoke stage), as aligned text for the console."""
    header = ('script', 'works', 'precision', 'img/s', 'peak MB', 'note')
    rows = [(name, {'finished': 'yes', 'failed': 'NO'}.get(row.get('status'), row.get('status')),
             row.get('precision'), row.get('img_per_sec'), row.get('peak_mem_mb'), _note(row))
            for name, row in r.get('stages', {}).get('smoke', {}).get('scripts', {}).items()]
    if not rows:
        return 'no smoke stage ran: no table of the scripts'
    cells = [header, *[tuple('-' if c in (None, '') else str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    gpu = r.get('gpu', {}).get('name', '?')
    works = sum(row[1] == 'yes' for row in rows)
    lines = [f'{works} of {len(rows)} scripts work on {gpu} ({r.get("stages", {}).get("smoke", {}).get("status")}):']
    lines += ['  '.join(c.ljust(w) for c, w in zip(row, widths)) + '  ' + row[-1][:100] for row in cells]
    return '\n'.join(line.rstrip() for line in lines)


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('results', type=Path, help='a gpu_check.json; gpu_check.md is written beside it')
    path = parser.parse_args(argv).results
    out = path.with_suffix('.md')
    out.write_text(markdown(json.loads(path.read_text())))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
