"""Pictures of runs: training curves from the JSON scalar logs, and the benchmark charts.

    python -m tools.bench.plots curves work_dirs/fcn_ade20k [work_dirs/pspnet_ade20k ...] --out curves.png

`curves` plots the training loss and the validation mIoU against the iteration, one colour per run
(several work dirs are overlaid). A run that was resumed has one `<timestamp>/vis_data/scalars.json`
per launch: they are merged in launch order, and where two launches logged the same iteration (a
resume from an earlier checkpoint) the later one wins.

`speed_memory()` and `miou_vs_speed()` draw the two charts of `python -m tools.bench.bench collect`.
Matplotlib runs with the Agg backend: no display is needed.
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

DPI = 120


# ---------------------------------------------------------------- training curves

def read_scalars(work_dir):
    """(train, evals) of a work dir, each a list of records sorted by 'step': train records carry
    'loss' (and 'lr', 'time', ...), eval records 'mIoU' (and 'aAcc', 'mAcc')."""
    train, evals = {}, {}
    for path in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):  # timestamp folders: launch order
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed run
            if 'step' not in record:
                continue
            if 'mIoU' in record:
                evals[record['step']] = record
            elif 'loss' in record:
                train[record['step']] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def run_label(work_dir):
    """'fcn r50-d8' from the run's summary.json, else the folder name."""
    try:
        summary = json.loads((Path(work_dir) / 'summary.json').read_text())
        return ' '.join(str(v) for v in (summary.get('model'), summary.get('variant')) if v)
    except (OSError, ValueError):
        return Path(work_dir).name


def _smooth(values, window):
    """Trailing mean over `window` points (the first points average what there is)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def curves(work_dirs, out, title=None):
    """Loss and mIoU over iterations for one or several work dirs; returns the PNG path."""
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    labels = [run_label(w) for w in work_dirs]
    if len(set(labels)) < len(labels):  # two runs of the same model: tell them apart by folder
        labels = [str(w) for w in work_dirs]
    any_eval = False
    for index, (work_dir, label) in enumerate(zip(work_dirs, labels)):
        colour = f'C{index % 10}'
        train, evals = read_scalars(work_dir)
        if not train and not evals:
            label += ' (no scalars.json)'
        steps = [r['step'] for r in train]
        losses = [r['loss'] for r in train]
        window = max(1, len(losses) // 40)
        if window > 1:  # many points: the raw loss faint, a running mean on top
            ax_loss.plot(steps, losses, color=colour, alpha=0.25, linewidth=0.8)
            ax_loss.plot(steps, _smooth(losses, window), color=colour,
                         label=f'{label} (running mean of {window} logs)')
        else:
            ax_loss.plot(steps, losses, color=colour, marker='.' if len(steps) < 30 else None, label=label)
        if evals:
            any_eval = True
            ax_miou.plot([r['step'] for r in evals], [r['mIoU'] for r in evals], color=colour, marker='o',
                         label=f'{label}: {evals[-1]["mIoU"]:.2f} at {evals[-1]["step"]}')
    ax_loss.set(title='training loss (all terms)', xlabel='iteration', ylabel='loss')
    ax_miou.set(title='validation mIoU', xlabel='iteration', ylabel='mIoU (%)')
    if any_eval:
        ax_miou.set_ylim(bottom=0, top=max(1.0, ax_miou.get_ylim()[1]))
    else:
        ax_miou.text(0.5, 0.5, 'no evaluation logged yet', ha='center', va='center', transform=ax_miou.transAxes,
                     color='grey')
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return Path(out)


# ---------------------------------------------------------------- benchmark charts

def _name(row):
    return f'{row["model"]} {row["variant"]}' if row.get('variant') else row['model']


def _memory_gb(row):
    """Peak GPU memory if the run had a GPU, else the process's peak RSS (both in GB)."""
    if row.get('max_mem_mb') not in (None, ''):
        return float(row['max_mem_mb']) / 1024, 'GPU'
    if row.get('max_rss_mb') not in (None, ''):
        return float(row['max_rss_mb']) / 1024, 'RSS'
    return None, None


def _failed_note(rows):
    failed = [_name(r) for r in rows if r['status'] != 'ok']
    return f'failed (not drawn): {", ".join(failed)}' if failed else ''


def speed_memory(rows, out, title=''):
    """Horizontal bars per model: measured training img/s; peak memory beside the reference's."""
    done = sorted((r for r in rows if r['status'] == 'ok' and r.get('img_per_sec') not in (None, '')),
                  key=lambda r: float(r['img_per_sec']))
    height = max(2.5, 0.42 * len(done) + 1.6)
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    names = [_name(r) for r in done]
    ys = range(len(done))
    speeds = [float(r['img_per_sec']) for r in done]
    ax_speed.barh(ys, speeds, color='C0')
    for y, value in zip(ys, speeds):
        ax_speed.text(value, y, f' {value:.3g}', va='center', fontsize=8)
    ax_speed.set(yticks=list(ys), yticklabels=names, xlabel='training images / s (measured)',
                 title='training throughput')
    ax_speed.set_xlim(0, max(speeds, default=1) * 1.18)

    measured = [_memory_gb(r) for r in done]
    kinds = {kind for _, kind in measured if kind}
    reference = [r.get('ref_mem_gb') for r in done]
    bar = 0.38
    ax_mem.barh([y + bar / 2 for y in ys], [m or 0 for m, _ in measured], height=bar, color='C1',
                label='measured peak ' + ('GPU memory' if kinds == {'GPU'} else 'process RSS (no GPU)'
                                          if kinds == {'RSS'} else 'memory (GPU, or RSS on CPU)'))
    ax_mem.barh([y - bar / 2 for y in ys], [float(v) if v not in (None, '') else 0 for v in reference],
                height=bar, color='0.75', label='reference recipe (per GPU, its batch)')
    for y, (value, _), ref in zip(ys, measured, reference):
        if value is not None:
            ax_mem.text(value, y + bar / 2, f' {value:.2f}', va='center', fontsize=8)
        if ref not in (None, ''):
            ax_mem.text(float(ref), y - bar / 2, f' {float(ref):.3g}', va='center', fontsize=8, color='0.4')
    top = max([m or 0 for m, _ in measured] + [float(v) for v in reference if v not in (None, '')] + [1])
    ax_mem.set_xlim(0, top * 1.18)
    ax_mem.set_ylim(-0.6, len(done) - 0.4)
    ax_mem.set(xlabel='peak memory, GB')
    ax_mem.legend(fontsize=8, loc='lower left', bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)  # as title
    for ax in (ax_speed, ax_mem):
        ax.grid(axis='x', alpha=0.3)
    note = _failed_note(rows)
    fig.suptitle('\n'.join(t for t in (title, note) if t), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return Path(out)


# Where a point's label may go, tried in order: (dx, dy) in points, alignment; far ones get a leader line.
_LABEL_SPOTS = [(5, 3, 'left', 'bottom'), (5, -3, 'left', 'top'), (-5, 3, 'right', 'bottom'),
                (-5, -3, 'right', 'top'), (0, 7, 'center', 'bottom'), (0, -7, 'center', 'top'),
                (18, 14, 'left', 'bottom'), (18, -14, 'left', 'top'), (-18, 14, 'right', 'bottom'),
                (-18, -14, 'right', 'top'), (0, 22, 'center', 'bottom'), (0, -22, 'center', 'top')]


def _place_labels(ax, xs, ys, names):
    """Label each point at the first spot where the label covers no other label or point."""
    from matplotlib.transforms import Bbox
    renderer = ax.figure.canvas.get_renderer()
    centres = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    taken = [Bbox.from_bounds(cx - 4, cy - 4, 8, 8) for cx, cy in centres]
    for x, y, name in zip(xs, ys, names):
        for dx, dy, ha, va in _LABEL_SPOTS:
            far = abs(dx) > 10 or abs(dy) > 10
            label = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords='offset points', ha=ha, va=va,
                                fontsize=8, arrowprops=dict(arrowstyle='-', color='0.6', lw=0.6) if far else None)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in taken):
                break
            if (dx, dy) != _LABEL_SPOTS[-1][:2]:
                label.remove()  # crowded everywhere: the last spot stays
        taken.append(box)


def miou_vs_speed(rows, out, title=''):
    """Each model at (measured img/s, the reference recipe's mIoU): the speed/accuracy trade-off."""
    points = [r for r in rows if r['status'] == 'ok' and r.get('img_per_sec') not in (None, '')
              and r.get('ref_mIoU') not in (None, '')]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = [float(r['img_per_sec']) for r in points]
    ys = [float(r['ref_mIoU']) for r in points]
    ax.scatter(xs, ys, s=40, color='C0', zorder=3)
    if xs and max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale('log')
    if xs:  # room for the labels on the right
        low, high = min(xs), max(xs)
        if ax.get_xscale() == 'log':
            ax.set_xlim(low / 1.3, high * 2.0)
        else:
            span = (high - low) or high or 1
            ax.set_xlim(max(0, low - 0.1 * span), high + 0.3 * span)
    ax.set(xlabel='training images / s (measured here)',
           ylabel='mIoU of the reference recipe (single-scale, %)',
           title='reference accuracy vs measured speed')
    ax.grid(alpha=0.3)
    _place_labels(ax, xs, ys, [_name(r) for r in points])
    skipped = [_name(r) for r in rows if r not in points]
    note = f'not drawn (failed or no reference mIoU): {", ".join(skipped)}' if skipped else ''
    fig.suptitle('\n'.join(t for t in (title, note) if t), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return Path(out)


# ---------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    plot = commands.add_parser('curves', help='loss and mIoU over iterations of one or several work dirs')
    plot.add_argument('work_dirs', nargs='+', help='WORK_DIR of a run (holds <timestamp>/vis_data/scalars.json)')
    plot.add_argument('--out', default='curves.png', help='PNG to write (default curves.png)')
    plot.add_argument('--title', help='figure title')
    args = parser.parse_args(argv)
    missing = [w for w in args.work_dirs if not Path(w).is_dir()]
    if missing:
        parser.error(f'not a folder: {", ".join(missing)}')
    print(f'wrote {curves(args.work_dirs, args.out, args.title)}')


if __name__ == '__main__':
    main()
