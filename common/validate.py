"""Every setting's valid range or set, checked after the flags are applied and before anything is built.

A typo in a flag or an edited constant must cost a second, not a traceback or a job that does
something else than asked. Two stages, both before anything is built, written or touched:

- `values()` (from cli.parse): each setting against its rule (RULES, by name; BACKBONE and HEAD
  against the script's tables), the script's own `check_settings(s)` (a crop its backbone cannot
  take, say), and the run options that only make sense together (--tta without --eval-only...).
- `paths()` (from runtime.run): the folders and files the run writes (WORK_DIR, --out, --dump-config)
  can be written: a work dir that is a file, or cannot be written, is refused with its path.

Each stage lists every problem it finds at once: the flag, the value given, what is allowed; then
exit code 2 (errors.report), no traceback.
"""
import os
from pathlib import Path

from common.errors import SetupError

PRECISIONS = ('auto', 'bf16', 'fp16', 'fp32')
SWITCH_ON, SWITCH_OFF = ('on', 'true', 'yes', '1'), ('off', 'false', 'no', '0')
CHANNELS_LAST = ('auto', *SWITCH_ON, *SWITCH_OFF)  # and FUSED_OPTIMIZER
SEED_MAX = 2**32 - 1           # numpy's seed range, which mmengine's set_random_seed feeds
MIN_CROP = 32                  # the deepest backbones here reduce by 32: a smaller crop has no feature map
TRACKERS = ('tensorboard', 'wandb', 'mlflow')  # TRACKER: one or several, comma-separated, or 'none'


def _flag(name):
    return '--' + name.lower().replace('_', '-')


def listed(value):
    """The names of a 'choices' setting (TRACKER): 'tensorboard, WandB' -> ['tensorboard', 'wandb'];
    'none' -> []."""
    names = [name.strip().lower() for name in str(value).split(',')]
    return [] if names == ['none'] else names


class Rule:
    """What one setting may be: kind 'int', 'float', 'size' (H, W), 'choice', 'choices' (one or
    several of them, comma-separated, no repeats), 'bool', 'path' or 'text';
    `low`/`high` bound numbers (inclusive; `above` makes `low` exclusive); `optional`: None allowed."""

    def __init__(self, kind, low=None, high=None, choices=(), optional=False, above=False, also=(), why=''):
        self.kind, self.low, self.high, self.choices = kind, low, high, tuple(choices)
        self.optional, self.above, self.also, self.why = optional, above, tuple(also), why

    def allowed(self):
        if self.kind == 'choice':
            text = 'one of ' + ', '.join(map(str, self.choices))
        elif self.kind == 'choices':
            text = 'one or several of ' + ', '.join(map(str, self.choices)) + ', comma-separated'
        elif self.kind in ('int', 'float', 'size'):
            noun = {'int': 'a whole number', 'float': 'a number', 'size': 'H,W: two whole numbers'}[self.kind]
            bounds = [f'{">" if self.above else ">="} {self.low}' if self.low is not None else '',
                      f'<= {self.high}' if self.high is not None else '']
            text = noun + (' ' + ' and '.join(b for b in bounds if b) if any(bounds) else '')
        else:
            text = {'bool': 'True or False', 'path': 'a path', 'text': 'text'}[self.kind]
        text += ''.join(f' (or {word!r})' for word in self.also) + (' (or None)' if self.optional else '')
        return text + (f'; {self.why}' if self.why else '')

    def ok(self, value):
        if value is None:
            return self.optional
        if isinstance(value, str) and value in self.also:
            return True
        if isinstance(value, str) and self.kind in ('int', 'float'):  # a str setting given as a number (setr's LR)
            try:
                value = float(value) if self.kind == 'float' else int(value)
            except ValueError:
                return False
        if self.kind == 'bool':
            return isinstance(value, bool)
        if self.kind == 'choice':  # 'ON' as 'on': common.speed reads switches case-blind
            return value in self.choices or (isinstance(value, str) and value.lower() in self.choices)
        if self.kind == 'choices':
            if not isinstance(value, str):
                return False
            names = listed(value)
            if not names:  # 'none', case-blind
                return 'none' in self.also
            return len(set(names)) == len(names) and all(n in self.choices for n in names)
        if self.kind in ('path', 'text'):
            return isinstance(value, str) and value != ''
        numbers = value if self.kind == 'size' else (value,)
        if self.kind == 'size' and (not isinstance(value, tuple) or len(value) != 2):
            return False
        kinds = (int, float) if self.kind == 'float' else (int,)
        return all(isinstance(v, kinds) and not isinstance(v, bool) and self._in_bounds(v) for v in numbers)

    def _in_bounds(self, v):
        if self.low is not None and (v <= self.low if self.above else v < self.low):
            return False
        return self.high is None or v <= self.high

    def bad_values(self):
        """Flag values this rule must refuse (for the tests): one per way of being wrong."""
        if self.kind in ('choice', 'choices'):
            return ['no-such-choice']
        if self.kind in ('int', 'float'):
            below = self.low if self.above else self.low - (1 if self.kind == 'int' else 0.5)
            found = [str(below)] if self.low is not None else []
            found += [str(self.high + 1)] if self.high is not None else []
            return found + ['abc']
        if self.kind == 'size':
            return [f'{self.low - 1},{self.low - 1}', '1,2,3', 'abc'] if self.low is not None else ['1,2,3']
        return []


def Int(low=None, high=None, **kw):
    return Rule('int', low, high, **kw)


def Float(low=None, high=None, **kw):
    return Rule('float', low, high, **kw)


def Size(low=1, **kw):
    return Rule('size', low, **kw)


def Choice(*choices, **kw):
    return Rule('choice', choices=choices, **kw)


# Every setting a script may have, by name. A script's own setting must be listed here too
# (tests/test_bad_input.py fails for one that is not), so that no value goes unchecked.
RULES = {
    'DATA_ROOT': Rule('path'), 'WORK_DIR': Rule('path'),
    'CROP_SIZE': Size(MIN_CROP, why=f'at least {MIN_CROP}: the deepest backbones reduce by 32'),
    'BATCH_PER_GPU': Int(1), 'MAX_ITERS': Int(1), 'VAL_INTERVAL': Int(1), 'LOG_INTERVAL': Int(1),
    'KEEP_CHECKPOINTS': Int(1), 'ACCUMULATE': Int(1), 'NUM_WORKERS': Int(-1, why='-1: sized from the CPUs'),
    'DIST_TIMEOUT_S': Int(1), 'SEED': Int(0, SEED_MAX), 'EVAL_BATCH': Int(0),
    'LR': Float(0, also=('auto',), optional=True, why="'auto' (setr) or None: the variant's recipe LR"), 'ETA_MIN': Float(0), 'WARMUP_ITERS': Int(0),
    'PRECISION': Choice(*PRECISIONS), 'CHANNELS_LAST': Choice(*CHANNELS_LAST),
    'ON_NONFINITE_LOSS': Choice('stop', 'skip'), 'DEVICE': Choice('auto', 'cpu'),
    'FUSED_OPTIMIZER': Choice(*CHANNELS_LAST),
    'TRACKER': Rule('choices', choices=TRACKERS, also=('none',),
                    why="'none': the text log and vis_data/scalars.json only (common/trackers.py)"), 'TF32': Rule('bool'), 'COMPILE': Rule('bool'), 'SKIP_BAD_SAMPLES': Rule('bool'),
    'ACTIVATION_CKPT': Rule('bool'),
    'PRETRAINED': Rule('path', optional=True, why="'auto': the recipe's file in pretrain/; None: from scratch"),
    # Model knobs of single scripts.
    'NUM_QUERIES': Int(1), 'NUM_KERNEL_UPDATES': Int(1), 'ISA_CHANNELS': Int(1), 'ISA_DOWN_FACTOR': Size(1),
    'OCR_CHANNELS': Int(1), 'PSA_MASK_SIZE': Size(1), 'EMBED_DIMS': Int(1), 'GC_RATIO': Float(0, 1, above=True),
}
VARIANT_TABLES = {'BACKBONE': 'BACKBONES', 'HEAD': 'HEADS'}


def rule_for(namespace, name):
    """The rule of setting `name` in a script (its namespace): the variant tables' keys for BACKBONE
    and HEAD, else RULES; None for a setting nobody described."""
    if name in VARIANT_TABLES and isinstance(namespace.get(VARIANT_TABLES[name]), dict):
        return Choice(*namespace[VARIANT_TABLES[name]])
    return RULES.get(name)


def values(namespace, settings, options):
    """Problems with the settings and run options (a list of lines; empty: all good)."""
    problems = []
    for name, value in settings.items():
        rule = rule_for(namespace, name)
        if rule is None:
            problems.append(f'{name} = {value!r}: no rule says what it may be (add one to common/validate.py RULES)')
        elif not rule.ok(value):
            problems.append(f'{_flag(name)} {_shown(value)} ({name}): must be {rule.allowed()}')
    problems += _options(options)
    check = namespace.get('check_settings')
    if callable(check) and not problems:
        import types
        problems += check(types.SimpleNamespace(**settings, **options)) or []
    return problems


def _shown(value):
    return ','.join(map(str, value)) if isinstance(value, tuple) else repr(value) if isinstance(value, str) else str(value)


def _options(options):
    problems = []
    writes = [flag for flag, key in (('--eval-only', 'eval_only'), ('--predict', 'predict'),
                                     ('--export-onnx', 'export_onnx'), ('--export-safetensors', 'export_safetensors'))
              if options.get(key)]
    if options.get('tta') and not options.get('eval_only'):
        problems.append('--tta: only with --eval-only (it is the multi-scale + flip test of an evaluation)')
    if options.get('out') and not writes:
        problems.append(f'--out {options["out"]}: only with --eval-only, --predict, --export-onnx or '
                        '--export-safetensors (training writes to --work-dir)')
    if options.get('export_safetensors') and (options.get('out') or '').endswith('.safetensors'):
        problems.append(f'--out {options["out"]}: --export-safetensors writes a folder (model.safetensors, '
                        'README.md, config.py); pass the folder')
    if options.get('opacity') is not None:
        if not options.get('predict'):
            problems.append(f'--opacity {options["opacity"]}: only with --predict')
        elif not 0 <= options['opacity'] <= 1:
            problems.append(f'--opacity {options["opacity"]}: must be a number from 0 to 1')
    if options.get('flops_size') is not None:
        if not options.get('flops'):
            problems.append(f'--flops-size {_shown(options["flops_size"])}: only with --flops')
        elif not Size(1).ok(options['flops_size']):
            problems.append(f'--flops-size {_shown(options["flops_size"])}: must be H,W: two whole numbers >= 1')
    return problems


def notes(s):
    """Settings that are allowed but likely not what was meant: said once in the banner."""
    found = []
    if s.VAL_INTERVAL > s.MAX_ITERS:
        found.append(f'VAL_INTERVAL {s.VAL_INTERVAL} > MAX_ITERS {s.MAX_ITERS}: the only evaluation and '
                     'checkpoint are at the end of the run')
    if s.LOG_INTERVAL > s.MAX_ITERS:
        found.append(f'LOG_INTERVAL {s.LOG_INTERVAL} > MAX_ITERS {s.MAX_ITERS}: no training log line')
    return found


# ---------------------------------------------------------------- the second stage: what exists

def paths(s):
    """Problems with the folders and files the run will write (a list of lines). What it reads is
    checked where it is read, with its own advice: the dataset (checks.dataset), pretrained files
    (common.pretrained), checkpoints (common.checkpoints)."""
    if s.dump_config:
        return _writable_file(s.dump_config, '--dump-config')
    mode = next((m for m in ('eval_only', 'predict', 'export_onnx', 'export_safetensors', 'flops')
                 if getattr(s, m, None)), None)
    problems = []
    if mode != 'flops':
        if s.out and not (mode == 'export_onnx' and s.out.endswith('.onnx')):
            problems += _writable_dir(s.out, '--out', None)
        elif s.out:
            problems += _writable_file(s.out, '--out')
        elif mode != 'export_safetensors':
            problems += _writable_dir(s.WORK_DIR, '--work-dir', 'WORK_DIR')
    if getattr(s, 'export_safetensors', None) and not s.out:  # its default: beside the checkpoint
        problems += _writable_dir(Path(s.export_safetensors).absolute().parent, '--export-safetensors', None)
    pretrained = getattr(s, 'PRETRAINED', None)
    if mode is None and pretrained not in (None, 'auto') and Path(pretrained).is_dir():
        problems.append(f'--pretrained {pretrained} (PRETRAINED): is a folder, not a weight file; pass a file, '
                        "'auto' (the recipe's file in pretrain/) or --no-pretrained")
    return problems


def _writable_dir(path, flag, name):
    p = Path(path)
    label = f'{flag} {path}' + (f' ({name})' if name else '')
    if p.exists() and not p.is_dir():
        return [f'{label}: is a file, not a folder; pass another --work-dir' if flag == '--work-dir'
                else f'{label}: is a file, not a folder']
    existing = next((a for a in [p, *p.absolute().parents] if a.exists()), None)
    if existing is None or not existing.is_dir():
        return [f'{label}: {existing} is not a folder, so it cannot be made']
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f'{label}: cannot be written ({existing} is not writable for this user)']
    return []


def _writable_file(path, flag):
    if Path(path).is_dir():
        return [f'{flag} {path}: is a folder, not a file']
    return _writable_dir(Path(path).absolute().parent, flag, None)


def refuse(problems, stage):
    """SetupError listing `problems`, or nothing."""
    if problems:
        fix = ('edit the settings block at the top of the script or pass other flags (--help lists them)'
               if stage == 'values' else 'fix these paths or pass other ones')
        raise SetupError(f'{len(problems)} problem{"s" if len(problems) > 1 else ""} with the '
                         f'{"settings" if stage == "values" else "files and folders"}:\n    '
                         + '\n    '.join(problems), fix)
