"""Every setting of every script is checked before anything runs: a bad value stops the run with one
message per problem (the flag, the value, what is allowed), exit code 2, no traceback, nothing made."""
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, SCRIPTS, TINY, load_script


def refused(capsys, module, *args):
    """(exit code, stderr) of module.main(args), which must stop with SystemExit."""
    with pytest.raises(SystemExit) as stop:
        module.main(list(args))
    return stop.value.code, capsys.readouterr().err


def test_every_setting_of_every_script_has_a_rule_its_default_keeps():
    from common import cli, scripts, validate
    for name in SCRIPTS:
        namespace = vars(load_script(name))
        defaults = {k: v for k, v in vars(cli.parse(namespace, [])).items()
                    if scripts.SETTING.match(k) and k != 'SCRIPT'}
        assert validate.values(namespace, defaults, {}) == [], name
        for setting in [*scripts.settings_of(namespace), *cli.COMMON_SETTINGS]:
            assert validate.rule_for(namespace, setting) is not None, \
                f'{name}: {setting} has no rule in common/validate.py RULES'


@pytest.mark.parametrize('name', SCRIPTS)
def test_bad_values_derived_from_each_rule_are_refused(name, capsys, tmp_path):
    """For each setting, one value per way of being wrong (below the range, above it, not a number,
    not a choice): exit 2, the flag named, no traceback, no work dir."""
    from common import cli, scripts, validate
    module = load_script(name)
    namespace = vars(module)
    work = tmp_path / 'work'
    tried = 0
    for setting in [*scripts.settings_of(namespace), *cli.COMMON_SETTINGS]:
        flag = cli.flag_name(setting)
        for bad in validate.rule_for(namespace, setting).bad_values():
            code, err = refused(capsys, module, '--work-dir', str(work), flag, bad)
            assert code == 2, f'{name} {flag} {bad}: exit {code}\n{err}'
            assert flag in err and 'Traceback' not in err, f'{name} {flag} {bad}:\n{err}'
            tried += 1
    assert tried >= 20 and not work.exists(), 'nothing may be created'


def test_the_cases_users_met_each_say_what_is_wrong(capsys, tiny_data, tmp_path):
    fcn = load_script('train_fcn')
    common = ['--data-root', tiny_data, '--work-dir', str(tmp_path / 'w')]
    for flags, expected in [(['--max-iters', '0'], '--max-iters 0 (MAX_ITERS): must be a whole number >= 1'),
                            (['--batch-per-gpu', '0'], '--batch-per-gpu 0 (BATCH_PER_GPU)'),
                            (['--crop-size', '0,0'], '--crop-size 0,0 (CROP_SIZE): must be H,W'),
                            (['--lr', '-0.1'], '--lr -0.1 (LR): must be a number >= 0'),
                            (['--num-workers', '-2'], '--num-workers -2 (NUM_WORKERS)'),
                            (['--precision', 'fp8'], "--precision 'fp8' (PRECISION): must be one of auto, bf16"),
                            (['--backbone', 'r77'], "--backbone 'r77' (BACKBONE): must be one of r50-d8, r101-d8")]:
        code, err = refused(capsys, fcn, *common, *flags)
        assert code == 2 and expected in err and 'Traceback' not in err, (flags, err)
    assert not (tmp_path / 'w').exists()


def test_several_problems_are_listed_together(capsys, tmp_path):
    code, err = refused(capsys, load_script('train_fcn'), '--work-dir', str(tmp_path / 'w'), '--max-iters', '0',
                        '--batch-per-gpu', '0', '--val-interval', '-5', '--seed', '-1')
    assert code == 2 and '4 problems with the settings' in err
    for flag in ('--max-iters 0', '--batch-per-gpu 0', '--val-interval -5', '--seed -1'):
        assert flag in err


def test_a_work_dir_that_is_a_file_or_cannot_be_made_is_refused(capsys, tiny_data, tmp_path):
    fcn = load_script('train_fcn')
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('mine')
    code, err = refused(capsys, fcn, *TINY, '--data-root', tiny_data, '--work-dir', str(a_file))
    assert code == 2 and f'--work-dir {a_file} (WORK_DIR): is a file, not a folder' in err and 'Traceback' not in err
    assert a_file.read_text() == 'mine'
    code, err = refused(capsys, fcn, *TINY, '--data-root', tiny_data, '--work-dir', str(a_file / 'sub'))
    assert code == 2 and 'is not a folder, so it cannot be made' in err


@pytest.mark.parametrize('flags, expected', [
    (['--tta'], '--tta: only with --eval-only'),
    (['--out', 'x'], '--out x: only with --eval-only, --predict, --export-onnx or --export-safetensors'),
    (['--opacity', '0.3'], '--opacity 0.3: only with --predict'),
    (['--flops-size', '64,64'], '--flops-size 64,64: only with --flops'),
    (['--predict', 'a.pth', 'b.jpg', '--opacity', '2'], '--opacity 2.0: must be a number from 0 to 1'),
])
def test_options_that_make_no_sense_together_are_refused(flags, expected, capsys, tmp_path):
    code, err = refused(capsys, load_script('train_fcn'), '--work-dir', str(tmp_path / 'w'), *flags)
    assert code == 2 and expected in err, err


def test_an_evaluation_interval_above_max_iters_is_said_once_in_the_banner():
    from common import cli, train
    module = load_script('train_fcn')
    s = cli.parse(vars(module), ['--max-iters', '100'])
    text = train.banner(s, 1)
    assert text.count('VAL_INTERVAL 4000 > MAX_ITERS 100') == 1
    assert 'note:' not in train.banner(cli.parse(vars(module), []), 1)


def test_a_setting_given_as_text_by_the_script_is_checked_as_a_number(capsys, tmp_path):
    """SETR's LR is 'auto' (the head's recipe LR) or a number."""
    setr = load_script('train_setr')
    code, err = refused(capsys, setr, '--work-dir', str(tmp_path / 'w'), '--lr', 'fast')
    assert code == 2 and "--lr 'fast' (LR): must be a number >= 0 (or 'auto')" in err
    from common import cli
    assert cli.parse(vars(setr), ['--lr', '0.002']).LR == '0.002'


@pytest.mark.slow
def test_a_bad_flag_from_the_command_line_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, 'train_fcn.py', '--max-iters', '0', '--crop-size', '16,16'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert '2 problems' in proc.stderr and '--crop-size 16,16' in proc.stderr, proc.stderr


def test_duplicate_signals_are_one_request_and_a_later_one_stops_at_once(monkeypatch):
    """torchrun forwards the SIGTERM its ranks already got from the group: one request. A second
    request after COALESCE_S stops at once (KeyboardInterrupt), as a second Ctrl-C does."""
    import os
    import time
    from common import resilience
    monkeypatch.setattr(resilience, '_signal_received', [])
    monkeypatch.setattr(resilience, 'COALESCE_S', 0.3)
    old = {s: signal.getsignal(s) for s in resilience.SIGNALS}
    try:
        resilience.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)   # the launcher's copy
        time.sleep(0.05)
        assert resilience._signal_received == [signal.SIGTERM]
        time.sleep(0.4)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
