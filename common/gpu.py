"""The machine's NVIDIA GPUs as the driver lists them, and whether this torch can use them.

A GPU that torch cannot use (a driver older than torch's CUDA build needs, a CPU-only torch) must not
turn a run into a CPU run without a word: on ADE20K that is weeks instead of hours. `problem()` says
what is wrong and what to do; the run stops on it before anything is built (checks.preflight, the
checkpoint modes, env_check). DEVICE = 'cpu' (`--device cpu`) is the explicit way to use the CPU on a
GPU machine: it hides the GPUs from torch for the whole run.
"""
import os
import re
import shutil
import subprocess

# The oldest Linux driver each CUDA release fully supports (NVIDIA's CUDA Toolkit release notes,
# "CUDA Toolkit and Corresponding Driver Versions"), for the CUDA versions torch is built for.
FULL_SUPPORT = {'11.8': 520, '12.1': 530, '12.4': 550, '12.6': 560, '12.8': 570, '12.9': 575, '13.0': 580}
# Minor-version compatibility: a CUDA 12.x build also runs on any driver >= 525, a 13.x one on >= 580
# (the same release notes), without PTX JIT for newer GPUs than the build targets.
MINOR_COMPAT = {'11': 450, '12': 525, '13': 580}
# setup.sh's TORCH_CUDA choices and the CUDA version each installs (docs/install.md: "Which CUDA build of torch").
# tools/setup/plan.py reads these tables too (standard library only here, for it): one set of numbers.
TORCH_CUDA = {'cu126': '12.6', 'cu128': '12.8', 'cu130': '13.0'}
CPU_CHOICE = '--device cpu (DEVICE = "cpu") trains on the CPU anyway'


def nvidia_gpus():
    """[(name, driver version, compute capability)] of the GPUs the NVIDIA driver lists; [] on a
    machine without one. nvidia-smi first; /proc/driver/nvidia when nvidia-smi is absent or fails."""
    smi = shutil.which('nvidia-smi')
    if smi:
        try:
            out = subprocess.run([smi, '--query-gpu=name,driver_version,compute_cap', '--format=csv,noheader'],
                                 capture_output=True, text=True, timeout=30)
            rows = [tuple(part.strip() for part in line.split(',')) for line in out.stdout.splitlines()]
            rows = [row for row in rows if len(row) == 3 and row[0]]
            if out.returncode == 0 and rows:
                return rows
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        text = open('/proc/driver/nvidia/version').read()
    except OSError:
        return []
    found = re.search(r'Kernel Module\s+(?:for \S+\s+)?([\d.]+)', text)
    return [('an NVIDIA GPU (nvidia-smi cannot list it)', found.group(1) if found else 'unknown', '?')]


def driver_needed(cuda):
    """The oldest driver (major version) a torch built for CUDA `cuda` ('13.0') runs on."""
    major = cuda.split('.')[0]
    return min(FULL_SUPPORT.get(cuda, 10**6), MINOR_COMPAT.get(major, 10**6))


def torch_cuda_for(driver):
    """setup.sh's TORCH_CUDA choice for a driver version ('535.104.05'), newest first; None if none fits."""
    major = int(driver.split('.')[0]) if driver.split('.')[0].isdigit() else 0
    fitting = [choice for choice, cuda in TORCH_CUDA.items() if driver_needed(cuda) <= major]
    return max(fitting, key=lambda c: tuple(map(int, TORCH_CUDA[c].split('.')))) if fitting else None


def problem(gpus=None, torch_cuda_available=None, torch_version=None, built_for=None, env=os.environ):
    """(what, fix) when the machine has an NVIDIA GPU that this torch cannot use; None otherwise
    (no GPU, a usable one, or GPUs hidden on purpose with CUDA_VISIBLE_DEVICES='' or --device cpu)."""
    if env.get('CUDA_VISIBLE_DEVICES', None) in ('', '-1'):
        return None
    if torch_cuda_available is None:
        import torch
        torch_cuda_available, torch_version, built_for = torch.cuda.is_available(), torch.__version__, torch.version.cuda
    if torch_cuda_available:
        return None
    gpus = nvidia_gpus() if gpus is None else gpus
    if not gpus:
        return None
    name, driver, capability = gpus[0]
    listed = f'{name} (driver {driver}' + (f', compute capability {capability})' if capability != '?' else ')')
    more = f' and {len(gpus) - 1} more' if len(gpus) > 1 else ''
    if not built_for:
        return (f'this machine has {listed}{more}, but torch {torch_version} is a CPU-only build',
                f'run `bash setup.sh` (it installs the CUDA build of torch); or {CPU_CHOICE}')
    needed = driver_needed(built_for)
    choice = torch_cuda_for(driver)
    what = (f'this machine has {listed}{more}, but torch {torch_version} cannot use it: it is built for '
            f'CUDA {built_for}, which needs NVIDIA driver >= {needed}')
    major = driver.split('.')[0]
    if major.isdigit() and int(major) >= needed:
        what = (f'this machine has {listed}{more} and its driver is new enough for torch {torch_version} '
                f'(CUDA {built_for}), yet torch sees no GPU: the driver may not be loaded, or this process '
                'cannot open /dev/nvidia*')
        return what, f'check `nvidia-smi` and the container\'s GPU access; or {CPU_CHOICE}'
    fix = f'install NVIDIA driver >= {needed}'
    if choice:
        fix += (f', or a torch built for your driver\'s CUDA: `TORCH_CUDA={choice} bash setup.sh` (CUDA '
                f'{TORCH_CUDA[choice]}, driver >= {driver_needed(TORCH_CUDA[choice])})')
    return what, f'{fix}; or {CPU_CHOICE}'


def use_cpu_only():
    """DEVICE = 'cpu': hide every GPU from torch for this process and the ones it starts (before
    torch first looks at CUDA)."""
    os.environ['CUDA_VISIBLE_DEVICES'] = ''
