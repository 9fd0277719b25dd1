"""Per-class IoU and accuracy of an evaluation: the rows, and their markdown and CSV tables.

An ADE20K evaluation scores 150 classes; the console shows their means, these tables keep the
classes. --eval-only writes them to its --out folder (common/infer/evaluate.py); a training run
writes WORK_DIR/per_class/iter_<N>.md and .csv after each evaluation, from KeptAreasIoUMetric: mmseg's
IoUMetric, keeping the per-class areas it summed (a run's own copy of the config names it:
train.prepare).
"""
import csv

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

LABEL_OFFSET = 1  # ADE id = class index + 1: the coding of ADE20K's own annotations


def class_names():
    from mmseg.datasets import ADE20KDataset
    return list(ADE20KDataset.METAINFO['classes'])


def areas_of(results):
    """(intersect, union, predicted, label) per class, summed over IoUMetric's per-image results."""
    return tuple(sum(column) for column in zip(*results))


def rows(metric, areas):
    """Per-class IoU and accuracy in percent, from the summed areas and with the formula IoUMetric
    uses for the means. None where undefined (and left out of the means): IoU of a class neither
    present nor predicted, accuracy of a class with no ground-truth pixel."""
    intersect, union, predicted, label = areas
    per_class = metric.total_area_to_metrics(intersect, union, predicted, label, ['mIoU'])

    def percent(value):
        return None if np.isnan(value) else round(float(value) * 100, 2)
    return [dict(index=i, ade_id=i + LABEL_OFFSET, name=name, IoU=percent(per_class['IoU'][i]),
                 Acc=percent(per_class['Acc'][i]), gt_pixels=int(label[i]), pred_pixels=int(predicted[i]))
            for i, name in enumerate(class_names())]


def markdown(table, only_present=False):
    shown = [r for r in table if r['gt_pixels'] or r['pred_pixels']] if only_present else table
    lines = ['| index | ADE id | class | IoU | Acc | pixels |', '|---:|---:|---|---:|---:|---:|']
    lines += [f'| {r["index"]} | {r["ade_id"]} | {r["name"]} | {_cell(r["IoU"])} | {_cell(r["Acc"])} | '
              f'{r["gt_pixels"]} |' for r in shown]
    return '\n'.join(lines)


def _cell(value):
    return '-' if value is None else f'{value:.2f}'


def write_csv(path, table):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({k: ('' if v is None else v) for k, v in row.items()} for row in table)


UNDEFINED = ('"-": undefined (no pixel of the class in the split, nor predicted for IoU), not counted '
             'in the means.')


@METRICS.register_module()
class KeptAreasIoUMetric(IoUMetric):
    """mmseg's IoUMetric (the same numbers), keeping the per-class areas of its last evaluation in
    `areas`: BaseMetric.evaluate clears the per-image results once the means are computed."""

    areas = None

    def compute_metrics(self, results):
        self.areas = areas_of(results)
        return super().compute_metrics(results)
