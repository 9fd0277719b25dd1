"""--eval-only: score a checkpoint on the validation split, as the training run's evaluation does.

Writes to --out (default WORK_DIR/eval_<checkpoint stem>[_tta]/): per_class.csv, per_class.md (IoU
and accuracy of the 150 classes) and metrics.json (mIoU, mAcc, aAcc, seconds, the variant, the
recipe's reference). It runs the recipe's test mode (whole or slide, model.test_cfg) with the same
IoUMetric as the training run's evaluation, so a checkpoint scores exactly what its run logged.
"""
import copy
import json
import logging
import time
from pathlib import Path

import torch

from common import ade20k, batched_eval, checks, class_table, scripts, speed
from common.infer.model import build_from, device


def _quiet_mmengine_logger():
    """Raise the current MMLogger's level: IoUMetric logs its own per-class table, we write ours."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(logging.WARNING)
    return lambda: logger.setLevel(previous)


def run(cfg, s, plan):
    """Score CKPT on the validation split, as the training run's evaluation does; write the tables."""
    from mmengine.registry import METRICS
    from mmengine.runner import Runner
    from mmseg.registry import MODELS
    from tqdm import tqdm
    loader_cfg = copy.deepcopy(cfg['test_dataloader'])
    checks.dataset(loader_cfg['dataset']['data_root'], splits=('val',))
    model = build_from(cfg, s, s.eval_only, '--eval-only')
    if s.tta:  # the script's own (tta_pipeline, as mmseg's configs name it), else the ADE20K one
        from common import fixed_window  # noqa: F401  registers ResizeToAtLeast, which BEiT's and MAE's use
        loader_cfg['dataset']['pipeline'] = copy.deepcopy(cfg.get('tta_pipeline') or ade20k.tta_pipeline())
        model = MODELS.build(dict(cfg.get('tta_model', dict(type='SegTTAModel')), module=model))
    else:  # TTA's views of one image are its batch already
        loader_cfg = batched_eval.batched(loader_cfg, batched_eval.size(s.EVAL_BATCH, torch.cuda.is_available()))
    loader = Runner.build_dataloader(loader_cfg)
    metric = METRICS.build(copy.deepcopy(cfg['test_evaluator']))
    metric.dataset_meta = loader.dataset.metainfo
    mode = cfg['model'].get('test_cfg', {}).get('mode', 'whole') + (' + multi-scale/flip TTA' if s.tta else '')
    precision = plan['precision']
    print(f'[{s.SCRIPT}] evaluating {s.eval_only} on {len(loader.dataset)} validation images ({mode}, '
          f'{device()}, {precision})', flush=True)
    start = time.perf_counter()
    with torch.no_grad(), speed.autocast(device(), precision):
        progress = tqdm(total=len(loader.dataset), desc='evaluate', unit='img', dynamic_ncols=True)
        for batch in loader:
            outputs = model.test_step(batch)
            metric.process(batch, [output.to_dict() for output in outputs])
            progress.update(len(outputs))
        progress.close()
    seconds = time.perf_counter() - start

    restore = _quiet_mmengine_logger()
    try:
        summary = {k: float(v) for k, v in metric.compute_metrics(metric.results).items()}  # the run's numbers
    finally:
        restore()
    rows = class_table.rows(metric, class_table.areas_of(metric.results))
    out = Path(s.out or Path(s.WORK_DIR) / f'eval_{Path(s.eval_only).stem}{"_tta" if s.tta else ""}')
    result = dict(checkpoint=str(s.eval_only), model=s.SCRIPT, variant=scripts.variant_name(vars(s)),
                  data_root=loader_cfg['dataset']['data_root'], mode=mode, tta=bool(s.tta), **summary,
                  images=len(loader.dataset), seconds=round(seconds, 2),
                  sec_per_image=round(seconds / max(1, len(loader.dataset)), 4), device=device(), precision=precision,
                  reference_mIoU=s.reference.get('mIoU_ms' if s.tta else 'mIoU'), recipe=s.reference.get('config'))
    write_eval(out, rows, result)
    print(class_table.markdown(rows, only_present=True))
    recipe = (f'; the recipe reports {result["reference_mIoU"]}{" ms+flip" if s.tta else ""} on ADE20K'
              if result['reference_mIoU'] is not None else '')
    print(f'[{s.SCRIPT}] mIoU {summary["mIoU"]:.2f}  mAcc {summary["mAcc"]:.2f}  aAcc {summary["aAcc"]:.2f}  '
          f'({len(loader.dataset)} images in {seconds:.1f} s{recipe})')
    print(f'[{s.SCRIPT}] wrote {out}/per_class.csv, per_class.md, metrics.json', flush=True)
    return result


def write_eval(out, rows, result):
    out.mkdir(parents=True, exist_ok=True)
    class_table.write_csv(out / 'per_class.csv', rows)
    head = (f'# {result["model"]} {result["variant"] or ""}: {result["checkpoint"]}\n\n'
            f'mIoU {result["mIoU"]:.2f}, mAcc {result["mAcc"]:.2f}, aAcc {result["aAcc"]:.2f} on '
            f'{result["images"]} images ({result["mode"]}). {class_table.UNDEFINED}\n\n')
    (out / 'per_class.md').write_text(head + class_table.markdown(rows) + '\n')
    (out / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
