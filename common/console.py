"""What a run shows on the console, and what it keeps for its log file only.

The console: the banner, one progress line per LOG_INTERVAL (iteration, loss, lr, s/iter, img/s,
ETA, memory on a GPU), each evaluation's summary (mIoU, mAcc, aAcc, the best so far) and the end of
the run. mmengine's environment dump, the resolved config, the hook table, its own per-iteration
lines, the per-class table and library warnings go to the run's log file only
(WORK_DIR/<timestamp>/<timestamp>.log), in full. `--verbose` shows all of it on the console too, as
mmengine prints it. Under torchrun only rank 0 prints: mmengine's console handler shows only errors
on the other ranks, and the lines here go through it.

How: the run's Runner (runner_class) gives mmengine's logger a console filter and formatter when it
builds it (before the environment dump); a line meant for the console carries a mark (say());
ProgressHook writes the progress and evaluation lines.
"""
import contextlib
import datetime
import io
import logging
import warnings
from pathlib import Path

from mmengine.hooks import Hook

MARK = 'ade_console'  # LogRecord attribute: this line is for the console (the log file keeps it too)


def say(logger, text, level=logging.INFO):
    """One line on the console (bare, as print() writes it) and, time-stamped, in the log file.
    `logger`: mmengine's (a runner's, or 'current': MMLogger's current instance)."""
    if logger == 'current':
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
    logger.log(level, text, extra={MARK: True})


class _ForConsole(logging.Filter):
    """The console shows marked lines and errors; everything else is the log file's."""

    def filter(self, record):
        return getattr(record, MARK, False) or record.levelno >= logging.ERROR


class _Bare(logging.Formatter):
    """A marked line as written; the others as mmengine formats them."""

    def __init__(self, formatter):
        super().__init__()
        self.formatter = formatter

    def format(self, record):
        return record.getMessage() if getattr(record, MARK, False) else self.formatter.format(record)


def attach(logger, verbose):
    """Make mmengine's `logger` show only marked lines and errors on the console (everything with
    `verbose`), and send Python warnings into its log file for the rest of the run (the caller
    restores warnings.showwarning: train.changes_of_a_run)."""
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setFormatter(_Bare(handler.formatter))
            if not verbose:
                handler.addFilter(_ForConsole())
    if not verbose:
        def to_log(message, category, filename, lineno, file=None, line=None):
            logger.warning(warnings.formatwarning(message, category, filename, lineno, line).rstrip())
        warnings.showwarning = to_log


def runner_class(base, verbose):
    """`base` (an mmengine Runner class) whose logger is attach()ed as it is built."""

    class ConsoleRunner(base):
        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            attach(logger, verbose)
            return logger

        # mmengine print()s "Loads checkpoint by local backend from path: ..." on every rank: to the log.
        def resume(self, *args, **kwargs):
            with _printed_to_log(self.logger, verbose):
                return super().resume(*args, **kwargs)

        def load_checkpoint(self, *args, **kwargs):
            with _printed_to_log(self.logger, verbose):
                return super().load_checkpoint(*args, **kwargs)
    ConsoleRunner.__name__ = ConsoleRunner.__qualname__ = base.__name__
    return ConsoleRunner


class _LogWriter(io.TextIOBase):
    def __init__(self, logger):
        self.logger = logger

    def write(self, text):
        if text.strip():
            self.logger.info(text.rstrip())
        return len(text)


def _printed_to_log(logger, verbose):
    """What library code print()s meanwhile goes to the log file (to the console with --verbose)."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(_LogWriter(logger))


def log_file(runner):
    """The run's log file, where everything the console leaves out is."""
    return Path(runner.log_dir) / f'{runner.timestamp}.log'


def duration(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


class ProgressHook(Hook):
    """The console's progress line every `interval` iterations, and each evaluation's summary (the
    per-class table: WORK_DIR/per_class/iter_<N>.md and .csv, from class_table)."""
    # After IterTimerHook (NORMAL: it times the iteration and sets the ETA), before LoggerHook
    # (BELOW_NORMAL: it resets the GPU's peak memory when it logs).
    priority = 55

    def __init__(self, script, interval, images_per_iter):
        self.script, self.interval, self.images_per_iter = script, interval, images_per_iter
        self.best = None  # (mIoU, iteration)

    def before_train(self, runner):
        best = runner.message_hub.get_info('best_score')  # a resumed run's best so far
        ckpt = runner.message_hub.get_info('best_ckpt') or ''
        if best is not None:
            self.best = (float(best), int(ckpt.rsplit('_', 1)[-1].split('.')[0]) if ckpt.endswith('.pth') else None)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not (self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner)):
            return
        import torch
        hub = runner.message_hub
        window = min(self.interval, runner.iter + 1)
        parts = [f'[{self.script}] iter {runner.iter + 1}/{runner.max_iters}']
        if 'train/loss' in hub.log_scalars:
            parts.append(f'loss {hub.get_scalar("train/loss").mean(window):.4f}')
        if 'train/lr' in hub.log_scalars:
            parts.append(f'lr {hub.get_scalar("train/lr").current():.3e}')
        if 'train/time' in hub.log_scalars:
            seconds = hub.get_scalar('train/time').mean(window)
            parts += [f'{seconds:.3f} s/iter', f'{self.images_per_iter / seconds:.1f} img/s']
        eta = hub.get_info('eta')
        if eta is not None:
            parts.append(f'ETA {duration(eta)}')
        if torch.cuda.is_available():
            parts.append(f'mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB')
        say(runner.logger, '  '.join(parts))

    def before_val_epoch(self, runner):
        images = len(runner.val_dataloader.dataset)
        say(runner.logger, f'[{self.script}] evaluating {images} validation image{"s" * (images != 1)} '
                           f'at iter {runner.iter}')

    def after_val_epoch(self, runner, metrics=None):
        metrics = metrics or {}
        if 'mIoU' not in metrics:
            return
        miou = float(metrics['mIoU'])
        if self.best is None or miou > self.best[0]:
            self.best = (miou, runner.iter)
        line = (f'[{self.script}] eval iter {runner.iter}: mIoU {miou:.2f}  mAcc {float(metrics["mAcc"]):.2f}  '
                f'aAcc {float(metrics["aAcc"]):.2f}  (best {self.best[0]:.2f} at iter {self.best[1]})')
        table = self._write_table(runner, metrics)
        say(runner.logger, line + (f'; per class: {table}' if table else ''))

    def _write_table(self, runner, metrics):
        from common import class_table
        metric = next((m for m in runner.val_evaluator.metrics if getattr(m, 'areas', None) is not None), None)
        if metric is None or runner.rank != 0:
            return None
        table = class_table.rows(metric, metric.areas)
        out = Path(runner.work_dir) / 'per_class'
        out.mkdir(exist_ok=True)
        class_table.write_csv(out / f'iter_{runner.iter}.csv', table)
        (out / f'iter_{runner.iter}.md').write_text(
            f'# {self.script}, iter {runner.iter}\n\nmIoU {float(metrics["mIoU"]):.2f}, mAcc {float(metrics["mAcc"]):.2f}, '
            f'aAcc {float(metrics["aAcc"]):.2f} on {len(runner.val_dataloader.dataset)} images. '
            f'{class_table.UNDEFINED}\n\n' + class_table.markdown(table) + '\n')
        return out / f'iter_{runner.iter}.md'
