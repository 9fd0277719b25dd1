"""What `bash setup.sh` installs and builds on this machine, decided before anything is installed.

    bash setup.sh --plan                     # the same as: python3 -m tools.setup.plan --plan
    bash setup.sh --plan --resolve           # also ask pip (a dry run) where each locked file comes from
    python3 -m tools.setup.plan --shell      # the plan as shell assignments (setup.sh evals these)

Standard library only: it runs with the system python before .venv exists, from the repository root
(setup.sh changes to it). The inputs:

  TORCH_CUDA             which CUDA build of torch: cu130 (the default: the package registry's torch,
                         requirements/lock.txt), cu128 or cu126 (PyTorch's own index, requirements/lock-<choice>.txt)
  TORCH_CUDA_ARCH_LIST   GPU architectures to compile mmcv's CUDA ops for ("9.0", "8.0;9.0"); without it
                         they come from the GPUs that `nvidia-smi` lists; with neither, mmcv gets CPU ops only
  CUDA_HOME              a CUDA toolkit of your own to build with; it is used only when its nvcc has torch's
                         CUDA version; otherwise the NVIDIA compiler packages of requirements/mmcv-cuda-build*.txt are
  TORCH_INDEX_URL        another address for PyTorch's index (a mirror, or a folder of wheels)
  MMCV_WHEEL_CACHE       where compiled mmcv wheels are kept (default ~/.cache/ade20k-train/wheels)

A choice that cannot work (a lock this checkout lacks, a driver too old for the CUDA version, an
architecture that CUDA version cannot compile for, a CUDA_HOME of another version) stops with one
message and exit code 2, before anything is installed.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import gpu  # standard library only, like this file: the driver table

ROOT = Path(__file__).resolve().parents[2]

MMCV = '2.1.0'
PYTORCH_INDEX = 'https://download.pytorch.org/whl/'
DEFAULT = 'cu130'
# torch's CUDA builds this project offers. driver: the oldest Linux driver that runs it, from the one
# table in common/gpu.py (the runs check the same numbers): 13.0 needs >= 580; a 12.x build runs on
# >= 525 by CUDA's minor-version compatibility (mmcv is compiled to each GPU's own code, no PTX JIT).
# arch: the compute capabilities that toolkit's nvcc compiles for (13.0 dropped Maxwell, Pascal and Volta;
# Blackwell needs 12.8).
def _choice(name, arch, index):
    cuda = gpu.TORCH_CUDA[name]
    suffix = '' if index is None else f'-{name}'
    return dict(cuda=cuda, driver=gpu.driver_needed(cuda), arch=arch, lock=f'requirements/lock{suffix}.txt',
                build=f'requirements/mmcv-cuda-build{suffix}.txt', index=index)


CHOICES = {
    'cu130': _choice('cu130', ('7.5', '12.1'), None),
    'cu128': _choice('cu128', ('5.0', '12.0'), PYTORCH_INDEX + 'cu128'),
    'cu126': _choice('cu126', ('5.0', '9.0'), PYTORCH_INDEX + 'cu126'),
}
ARCH_RE = re.compile(r'^(\d+)\.(\d+)([af]?)(\+PTX)?$')


class Refused(Exception):
    """A choice that cannot work; setup.sh prints the message and exits 2."""


def _version_key(text):
    major, minor = text.split('.')[:2]
    return int(major), int(re.match(r'\d+', minor).group())


def gpus(env):
    """[(name, driver, compute_cap)] of the GPUs `nvidia-smi` lists; [] without one (or its driver)."""
    smi = shutil.which('nvidia-smi', path=env.get('PATH'))
    if not smi:
        return []
    try:
        out = subprocess.run([smi, '--query-gpu=name,driver_version,compute_cap', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    rows = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.rsplit(',', 2)]
        if len(parts) == 3 and ARCH_RE.match(parts[2]):
            rows.append(tuple(parts))
    return rows


def parse_arch_list(text):
    """'8.0;9.0+PTX' or '8.0 9.0' -> ['8.0', '9.0+PTX'] (torch's TORCH_CUDA_ARCH_LIST syntax)."""
    items = [item for item in re.split(r'[;\s]+', text.strip()) if item]
    bad = [item for item in items if not ARCH_RE.match(item)]
    if not items or bad:
        raise Refused(f'TORCH_CUDA_ARCH_LIST={text!r} is not a list of compute capabilities such as "9.0" or '
                      '"8.0;9.0" (named architectures like "Hopper" are not accepted here)')
    return items


def arch_tag(archs):
    """['8.0', '9.0+PTX'] -> 'sm80-sm90+ptx': the architecture part of the mmcv cache key."""
    tags = []
    for arch in archs:
        major, minor, suffix, ptx = ARCH_RE.match(arch).groups()
        tags.append(f'sm{major}{minor}{suffix}' + ('+ptx' if ptx else ''))
    return '-'.join(tags)


def nvcc_release(nvcc):
    """'13.0' from `nvcc --version`, or None when it does not run."""
    try:
        out = subprocess.run([str(nvcc), '--version'], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'release (\d+\.\d+)', out.stdout)
    return match.group(1) if match else None


def locked(lock_text, name):
    """The version pinned for `name` in a requirements lock, or None."""
    match = re.search(rf'^{re.escape(name)}==(\S+)', lock_text, re.M)
    return match.group(1) if match else None


def _index_args(index):
    if index is None:
        return []
    return ['--find-links', index] if Path(index).is_dir() else ['--extra-index-url', index]


def plan(env=None, root=ROOT):
    """Everything setup.sh needs to know, as a dict; raises Refused."""
    env = dict(os.environ if env is None else env)
    choice = env.get('TORCH_CUDA', '').strip() or DEFAULT
    if choice not in CHOICES:
        raise Refused(f'TORCH_CUDA={choice} is not one of {", ".join(CHOICES)} '
                      '(' + ', '.join(f'{c}: driver >= {s["driver"]}' for c, s in CHOICES.items()) + ')')
    spec = CHOICES[choice]
    index = env.get('TORCH_INDEX_URL') or spec['index']
    p = dict(torch_cuda=choice, cuda=spec['cuda'], driver_needed=spec['driver'], lock=spec['lock'],
             index=index, index_args=_index_args(index) if spec['index'] else [])
    lock_path = root / spec['lock']
    if not lock_path.is_file():
        raise Refused(
            f'TORCH_CUDA={choice}: {spec["lock"]} is not in this checkout, and setup.sh installs only hash-locked '
            f'files. Its hashes come from {spec["index"]}, which was not reachable where the locks were made: '
            f'on a machine that reaches it run `python -m tools.setup.make_lock --torch-cuda {choice}` and commit '
            f'{spec["lock"]} and {spec["build"]}; or use the default (unset TORCH_CUDA: CUDA 13.0, driver >= 580)')
    lock_text = lock_path.read_text()
    torch_pin = locked(lock_text, 'torch')
    if torch_pin is None:
        raise Refused(f'{spec["lock"]} pins no torch')
    # torch.__version__ carries the CUDA tag: the registry's 2.13.0 reports 2.13.0+cu130.
    p['torch'] = torch_pin if '+' in torch_pin else f'{torch_pin}+{choice}'

    found = gpus(env)
    p['gpus'] = [f'{name}, driver {driver}, compute capability {cap}' for name, driver, cap in found]
    if found:
        oldest = min(found, key=lambda row: _version_key(row[1]))[1]
        if _version_key(oldest)[0] < spec['driver']:
            fits = [f'TORCH_CUDA={c} (driver >= {s["driver"]})' for c, s in CHOICES.items()
                    if _version_key(oldest)[0] >= s['driver']]
            raise Refused(f'the NVIDIA driver {oldest} is older than CUDA {spec["cuda"]} (TORCH_CUDA={choice}) needs '
                          f'(>= {spec["driver"]}): torch would not see the GPU. '
                          + (f'Use {" or ".join(fits)}, or update the driver' if fits else 'Update the driver'))
    if env.get('TORCH_CUDA_ARCH_LIST', '').strip():
        archs, p['arch_from'] = parse_arch_list(env['TORCH_CUDA_ARCH_LIST']), 'TORCH_CUDA_ARCH_LIST'
    elif found:
        archs = sorted({cap for _, _, cap in found}, key=_version_key)
        p['arch_from'] = 'the GPU' + ('s' if len(found) > 1 else '') + ' (nvidia-smi)'
    else:
        archs, p['arch_from'] = [], 'no GPU and no TORCH_CUDA_ARCH_LIST'
    p['arch_list'] = ';'.join(archs)
    low, high = spec['arch']
    outside = [a for a in archs if not _version_key(low) <= _version_key(a) <= _version_key(high)]
    if outside:
        fits = [c for c, s in CHOICES.items()
                if all(_version_key(s['arch'][0]) <= _version_key(a) <= _version_key(s['arch'][1]) for a in archs)
                and all(_version_key(driver)[0] >= s['driver'] for _, driver, _ in found)]
        raise Refused(f'CUDA {spec["cuda"]} (TORCH_CUDA={choice}) compiles for compute capability {low} to '
                      f'{high}, not {", ".join(outside)}'
                      + (f': use TORCH_CUDA={" or ".join(fits)}' if fits else ''))

    p['variant'] = f'cuda{spec["cuda"]}-{arch_tag(archs)}' if archs else 'cpu'
    p['cuda_build_lock'] = spec['build'] if archs else ''
    p.update(nvcc_from='', nvcc='', cuda_home='', cuda_build_dir='', nvcc_note='')
    if archs:
        _choose_nvcc(p, env, root, spec)

    py = f'{sys.version_info.major}{sys.version_info.minor}'
    cache = env.get('MMCV_WHEEL_CACHE') or str(Path(env.get('XDG_CACHE_HOME') or Path(env.get('HOME', '~')) / '.cache')
                                               / 'ade20k-train' / 'wheels')
    p['mmcv_dir'] = f'{cache}/mmcv-{MMCV}-torch{p["torch"]}-py{py}-{p["variant"]}'
    return p


def _choose_nvcc(p, env, root, spec):
    """The registry's compiler (requirements/mmcv-cuda-build*.txt) unless CUDA_HOME names a toolkit of
    torch's CUDA version; a system nvcc of another version is named, never used."""
    cuda = spec['cuda']
    if env.get('CUDA_HOME'):
        nvcc = Path(env['CUDA_HOME']) / 'bin' / 'nvcc'
        release = nvcc_release(nvcc)
        if release != cuda:
            raise Refused(f'CUDA_HOME={env["CUDA_HOME"]}: {nvcc} is '
                          + (f'CUDA {release}' if release else 'missing or does not run')
                          + f', but torch {p["torch"]} is built for CUDA {cuda}. Unset CUDA_HOME to build with the '
                          f'registry\'s nvcc {cuda} ({spec["build"]})'
                          + (', or choose the TORCH_CUDA of that version' if release else ''))
        p.update(nvcc_from='system', nvcc=str(nvcc), cuda_home=env['CUDA_HOME'],
                 nvcc_note=f'CUDA_HOME is set and its nvcc is CUDA {release}, torch\'s version')
        return
    build = root / spec['build']
    if not build.is_file():
        raise Refused(f'{spec["build"]} (the CUDA compiler packages for CUDA {cuda}) is not in this checkout: '
                      f'run `python -m tools.setup.make_lock --torch-cuda {p["torch_cuda"]}` where {p["index"] or "PyPI"} '
                      'is reachable, or set CUDA_HOME to a CUDA ' + cuda + ' toolkit')
    text = build.read_text()
    version = locked(text, 'nvidia-cuda-nvcc') or locked(text, 'nvidia-cuda-nvcc-cu12') or '?'
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    cache = Path(env.get('XDG_CACHE_HOME') or Path(env.get('HOME', '~')) / '.cache') / 'ade20k-train' / 'cuda'
    p.update(nvcc_from='registry', nvcc=f'nvidia-cuda-nvcc {version} ({spec["build"]})',
             cuda_build_dir=str(cache / f'nvcc{version}-{digest}'))
    other = shutil.which('nvcc', path=env.get('PATH')) or next(
        (c for c in ('/usr/local/cuda/bin/nvcc',) if Path(c).exists()), None)
    if other:
        release = nvcc_release(other)
        if release == cuda:
            p['nvcc_note'] = (f'system nvcc {other} (CUDA {release}, torch\'s version) not used: the pinned registry '
                              f'packages are; set CUDA_HOME={_toolkit_home(other, env)} to build with it')
        else:
            p['nvcc_note'] = (f'system nvcc {other} (CUDA {release or "?"}) not used: torch {p["torch"]} is built '
                              f'for CUDA {cuda}')
    else:
        p['nvcc_note'] = 'no system nvcc'


def _toolkit_home(nvcc, env):
    """The toolkit folder of an nvcc on PATH (it may be a wrapper script, as /usr/local/bin/nvcc here)."""
    for home in (Path(os.path.realpath(nvcc)).parent.parent, Path(os.path.realpath('/usr/local/cuda'))):
        if (home / 'bin' / 'nvcc').exists() and (home / 'include' / 'cuda_runtime.h').exists():
            return home
    return 'its toolkit folder'


def resolve(p, python=sys.executable, env=None):
    """Where pip would take each file of the plan's lock from: [(name==version, url)] (a dry run with
    the same options setup.sh installs with; it downloads the files to check their hashes)."""
    env = dict(os.environ if env is None else env, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS='')
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, 'report.json')
        cmd = [python, '-m', 'pip', 'install', '--dry-run', '--quiet', '--ignore-installed', '--no-deps',
               '--require-hashes', '--report', str(report), '-r', str(ROOT / p['lock']), *p['index_args']]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        items = json.loads(report.read_text())['install']
    return [(f'{i["metadata"]["name"]}=={i["metadata"]["version"]}', i['download_info']['url']) for i in items]


def describe(p):
    choice = 'the default' if p['torch_cuda'] == DEFAULT else 'TORCH_CUDA'
    lines = [
        ('torch', f'{p["torch"]} for CUDA {p["cuda"]} (TORCH_CUDA={p["torch_cuda"]}, {choice}; '
                  f'needs driver >= {p["driver_needed"]})'),
        ('lock', p['lock']),
        ('index', f'PyPI and {p["index"]} ({" ".join(p["index_args"])})' if p['index_args'] else 'PyPI'),
        ('gpus', '; '.join(p['gpus']) or 'none'),
        ('arch list', f'{p["arch_list"] or "-"} (from {p["arch_from"]})'),
        ('mmcv ops', p['variant']),
    ]
    if p['variant'] != 'cpu':
        lines += [('nvcc', f'{p["nvcc_from"]}: {p["nvcc"]}' + (f' in {p["cuda_build_dir"]}' if p['cuda_build_dir'] else '')),
                  ('nvcc why', p['nvcc_note'])]
    else:
        lines.append(('nvcc', 'not needed (CPU ops)'))
    lines.append(('mmcv cache', p['mmcv_dir']))
    width = max(len(key) for key, _ in lines)
    return '\n'.join(f'[plan] {key + ":":<{width + 1}} {value}' for key, value in lines)


def as_shell(p):
    names = dict(TORCH_CUDA=p['torch_cuda'], TORCH_CUDA_VERSION=p['cuda'], TORCH_EXPECTED=p['torch'],
                 LOCK=p['lock'], VARIANT=p['variant'], ARCH_LIST=p['arch_list'], CUDA_BUILD_LOCK=p['cuda_build_lock'],
                 NVCC_FROM=p['nvcc_from'], NVCC_NOTE=p['nvcc_note'], SYSTEM_CUDA_HOME=p['cuda_home'],
                 CUDA_BUILD_DIR=p['cuda_build_dir'], MMCV_DIR=p['mmcv_dir'])
    out = [f'{key}={shlex.quote(value)}' for key, value in names.items()]
    out.append('INDEX_ARGS=(' + ' '.join(shlex.quote(a) for a in p['index_args']) + ')')
    return '\n'.join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--plan', action='store_true', help='print the plan (the default)')
    mode.add_argument('--shell', action='store_true', help='print it as shell assignments')
    mode.add_argument('--json', action='store_true', help='print it as JSON')
    parser.add_argument('--resolve', action='store_true', help='with --plan: where pip takes each locked file from')
    args = parser.parse_args(argv)
    try:
        p = plan()
    except Refused as exc:
        print(f'[setup] refused: {exc}', file=sys.stderr)
        return 2
    if args.shell:
        print(as_shell(p))
    elif args.json:
        print(json.dumps(p, indent=1))
    else:
        print(describe(p))
        if args.resolve:
            for name, url in resolve(p):
                print(f'[plan] from: {name} {url}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
