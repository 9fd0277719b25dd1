"""Experiment trackers (TRACKER): the mmengine vis backends a run writes to, and what each is told.

TRACKER names them: 'tensorboard' (the default), 'wandb', 'mlflow', several ('tensorboard,wandb'), or
'none'. The text log and vis_data/scalars.json (mmengine's LocalVisBackend, which the plots read) are
always written. mmengine does the logging: the Runner gives every backend the config (add_config),
and its LoggerHook the same scalars at the same steps (loss terms, lr, time, mIoU...); only rank 0
writes (the visualizer's methods are master_only). Registered here in VISBACKENDS, W&B's and
MLflow's backends add what a user looks for in their UI:
- the run's name, '<script>[ <variant>] <timestamp>' (the timestamp of the launch's log folder in
  WORK_DIR), grouped by WORK_DIR's name (W&B group, MLflow experiment): the launches of one training;
- at the end, whatever stopped the run, summary.json's numbers as `summary/<key>` (W&B: the run's
  summary; MLflow: metrics, and tags for the words such as status) and, for MLflow, summary.json and
  the launch's log, config and scalars as artifacts. Only then is the W&B run finished and the MLflow
  run ended: mmengine's LoggerHook closes the visualizer when training ends, before summary.json
  exists, so while `hold` is on, their close waits for `finish` (common/train.py calls both);
- W&B runs offline (`wandb sync` uploads them later) unless WANDB_MODE is set or a W&B login is found
  (WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc): logged in, a run is online, as W&B's own
  default is. Its code artifact holds the script and common/, not every .py below the working folder;
- MLflow logs to MLFLOW_TRACKING_URI, else to a file store beside the launches, WORK_DIR/mlruns.
"""
import contextlib
import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import MLflowVisBackend, WandbVisBackend, force_init_env

from common import console, validate
from common.errors import SetupError

ROOT = Path(__file__).resolve().parents[1]
WANDB_PROJECT = 'ade20k-segmentation'  # unless WANDB_PROJECT says otherwise
WANDB_HOST = 'https://api.wandb.ai'
PREFIX = 'summary/'
ARTIFACT_SUFFIXES = ('.log', '.py', '.json')  # a launch's log, config and scalars
MAX_TAG = 5000  # characters of an MLflow tag's value we keep (summary.json has the whole)


def vis_backends(tracker, *, work_dir, script, variant=None):
    """The config's vis_backends for TRACKER (LocalVisBackend first, always)."""
    names = validate.listed(tracker)
    backends = [dict(type='LocalVisBackend')]
    if 'tensorboard' in names:
        backends.append(dict(type='TensorboardVisBackend'))
    run_name = ' '.join(str(part) for part in (script, variant) if part)
    group = Path(work_dir).name
    if 'wandb' in names:
        init_kwargs = dict(group=group, job_type='train', tags=[str(t) for t in (script, variant) if t])
        if not os.environ.get('WANDB_PROJECT'):  # wandb.init's argument would win over the variable
            init_kwargs['project'] = WANDB_PROJECT
        backends.append(dict(type='RunWandbVisBackend', run_name=run_name, init_kwargs=init_kwargs,
                             code=[f'train_{script}.py', 'common'] if script else ['common'],
                             # charts against the iteration (each row's `step`, as in scalars.json)
                             define_metric_cfg=[dict(name='step'), dict(name='*', step_metric='step')]))
    if 'mlflow' in names:
        backends.append(dict(type='RunMLflowVisBackend', run_name=run_name,
                             exp_name=os.environ.get('MLFLOW_EXPERIMENT_NAME') or group,
                             tags=dict(script=script, variant=str(variant), work_dir=group),
                             tracking_uri=os.environ.get('MLFLOW_TRACKING_URI') or None))
    return backends


def wandb_login_found(environ=None):
    """A W&B login as wandb.init looks for one: WANDB_API_KEY (or an identity token file), or
    `wandb login`'s entry for the W&B host in ~/.netrc (or $NETRC)."""
    environ = os.environ if environ is None else environ
    if environ.get('WANDB_API_KEY') or environ.get('WANDB_IDENTITY_TOKEN_FILE'):
        return True
    host = urlparse(environ.get('WANDB_BASE_URL') or WANDB_HOST).hostname
    try:
        return netrc.netrc(environ.get('NETRC') or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def flat_summary(summary, prefix=PREFIX):
    """summary.json's entries as `summary/<key>` (nested ones `summary/speed/precision`), None left out."""
    found = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            found.update(flat_summary(value, f'{prefix}{key}/'))
        elif value is not None:
            found[f'{prefix}{key}'] = value
    return found


def _launch(save_dir):
    """(timestamp, log folder) of the launch whose vis_data folder is `save_dir` (WORK_DIR/<timestamp>/vis_data)."""
    log_dir = Path(save_dir).parent
    return log_dir.name, log_dir


def outcome(status):
    """summary.json's status as 'finished', 'killed' (interrupted: pre-emption, Ctrl-C) or 'failed'."""
    status = str(status or 'failed')
    return 'finished' if status == 'finished' else 'killed' if status.startswith('interrupted') else 'failed'


class _Held:
    """While `held`, close() (mmengine's LoggerHook, when training ends) waits for finish(summary)."""
    held = False
    closed = False
    status = 'finished'  # how the run ended, as finish() learns it from summary.json (outcome)

    def close(self):
        if self.held or self.closed:
            return
        self.closed = True
        self._end()

    def finish(self, summary, summary_path):
        """Record summary.json's numbers, then finish the run."""
        self.held, self.status = False, outcome(summary.get('status'))
        try:
            if self.initialised:
                self._record(summary, Path(summary_path))
        finally:  # a run left open would hang W&B's service or leave MLflow's RUNNING
            self.close()

    @property
    def initialised(self):
        return getattr(self, '_env_initialized', False)


def _started(what, init):
    """Run `init` (the library's start of a run); a failure is the user's to fix: login, server, network."""
    try:
        init()
    except SetupError:
        raise
    except Exception as exc:
        raise SetupError(f'{what} could not start the run: {type(exc).__name__}: {exc}', {
            'W&B': 'check `wandb login` and the network, or run offline with WANDB_MODE=offline',
            'MLflow': 'check MLFLOW_TRACKING_URI and that its server answers, or unset it for a file store '
                      'in WORK_DIR/mlruns'}[what]) from exc


@VISBACKENDS.register_module(force=True)
class RunWandbVisBackend(_Held, WandbVisBackend):
    """mmengine's WandbVisBackend with the run's name, offline without a login, a code artifact of
    the script and common/, and summary.json's numbers in the run's summary."""

    def __init__(self, save_dir, run_name='', code=(), **kwargs):
        super().__init__(save_dir, **kwargs)
        self._run_name, self._code = run_name, tuple(code)

    def _init_env(self):
        kwargs = self._init_kwargs = dict(self._init_kwargs or {})
        timestamp, _ = _launch(self._save_dir)
        kwargs.setdefault('name', f'{self._run_name} {timestamp}'.strip())
        if 'mode' not in kwargs and not os.environ.get('WANDB_MODE') and not wandb_login_found():
            kwargs['mode'] = 'offline'
            console.say('current', 'W&B: offline (no WANDB_MODE and no W&B login): `wandb sync` uploads the run '
                                   'later; `wandb login` or WANDB_MODE=online for online runs')
        _started('W&B', super()._init_env)

    @force_init_env
    def add_config(self, config, **kwargs):
        self._wandb.config.update(config.to_dict(), allow_val_change=self._init_kwargs.get('allow_val_change', False))
        if self._code:
            self._log_code()

    def _log_code(self):
        """The script and common/ as an artifact of type 'source' (W&B reserves 'code' for log_code).
        Not run.log_code, which mmengine calls: it walks every folder below the working one (.venv,
        data/: tens of thousands of files, seconds) and keeps each .py found there, .venv's too."""
        artifact = self._wandb.Artifact(self._log_code_name or f'source-{Path(self._code[0]).stem}', type='source')
        for entry in self._code:
            path = ROOT / entry
            for file in sorted(path.rglob('*.py')) if path.is_dir() else [path]:
                artifact.add_file(str(file), name=file.relative_to(ROOT).as_posix())
        self._wandb.run.log_artifact(artifact)

    @force_init_env
    def add_scalars(self, scalar_dict, step=0, file_path=None, **kwargs):
        # The row as scalars.json has it, with its step (mmengine's own drops it: W&B counts its calls).
        self._wandb.log({**scalar_dict, 'step': step}, commit=self._commit)

    def _record(self, summary, summary_path):
        self._wandb.run.summary.update(flat_summary(summary))

    def _end(self):
        if self.initialised:  # W&B marks a run with a non-zero exit code failed
            self._wandb.finish(exit_code=0 if self.status == 'finished' else 1)


@VISBACKENDS.register_module(force=True)
class RunMLflowVisBackend(_Held, MLflowVisBackend):
    """mmengine's MLflowVisBackend with a file store in WORK_DIR/mlruns (unless a tracking URI is
    given), the run's name with its timestamp, and at the end summary.json's numbers and the
    launch's files: its log folder's .log/.py/.json (mmengine's own close would take every such file
    below WORK_DIR, the store and other launches included)."""

    def __init__(self, save_dir, **kwargs):
        kwargs.setdefault('artifact_suffix', ARTIFACT_SUFFIXES)
        super().__init__(save_dir, **kwargs)
        if isinstance(self._artifact_suffix, str):
            self._artifact_suffix = (self._artifact_suffix,)

    def _init_env(self):
        timestamp, self._log_dir = _launch(self._save_dir)
        self._run_name = f'{self._run_name or ""} {timestamp}'.strip()
        if self._tracking_uri is None:  # mmengine then makes a file store at save_dir: one for all launches
            self._save_dir = str(self._log_dir.parent / 'mlruns')
        _started('MLflow', super()._init_env)

    def _record(self, summary, summary_path):
        values = flat_summary(summary)
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._mlflow.log_metrics(numbers, step=int(summary.get('iters_done') or 0))
        # A status can hold a long error message: MLflow refuses tags over 8000 characters.
        self._mlflow.set_tags({k: str(v)[:MAX_TAG] for k, v in values.items() if k not in numbers})
        if summary_path.is_file():
            self._mlflow.log_artifact(str(summary_path))

    def _end(self):
        if not self.initialised:
            return
        for path in sorted(self._log_dir.rglob('*')):
            relative = path.relative_to(self._log_dir)
            if path.is_file() and path.suffix in self._artifact_suffix and 'wandb' not in relative.parts:
                self._mlflow.log_artifact(str(path), str(relative.parent) if relative.parent.parts else None)
        self._mlflow.end_run(status=self.status.upper())  # FINISHED, KILLED or FAILED
        console.say('current', f'MLflow: run "{self._run_name}" ({self.status}) in {self._mlflow.get_tracking_uri()}')


@contextlib.contextmanager
def mlflow_file_store(cfg):
    """MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set (it would have a database):
    a run whose MLflow logs to one (WORK_DIR/mlruns, or a file: MLFLOW_TRACKING_URI) sets it while it
    lasts, unless the user did."""
    backends = (cfg.get('visualizer') or {}).get('vis_backends') or cfg.get('vis_backends') or ()
    uses = [b for b in backends if b.get('type') == 'RunMLflowVisBackend'
            and urlparse(b.get('tracking_uri') or 'file:').scheme == 'file']
    if not uses or 'MLFLOW_ALLOW_FILE_STORE' in os.environ:
        yield
        return
    os.environ['MLFLOW_ALLOW_FILE_STORE'] = 'true'
    try:
        yield
    finally:
        os.environ.pop('MLFLOW_ALLOW_FILE_STORE', None)


HELD = ('RunWandbVisBackend', 'RunMLflowVisBackend')


def hold(visualizer):
    """The trackers' runs stay open after training ends, for summary.json's numbers (finish)."""
    for name in HELD:
        backend = visualizer.get_backend(name)
        if backend is not None:
            backend.held = True


def finish(visualizer, summary, summary_path):
    """summary.json's numbers to each tracker, then its run finished (rank 0, once, whatever stopped
    the run). A tracker that fails here is reported, not raised: it must not hide the run's outcome."""
    for name in HELD:
        backend = visualizer.get_backend(name)
        if backend is None:
            continue
        try:
            backend.finish(summary, summary_path)
        except Exception as exc:
            console.say('current', f'{name}: could not record the summary or finish the run: '
                                   f'{type(exc).__name__}: {exc}', level=logging.WARNING)
