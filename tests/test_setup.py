"""setup.sh's choices (tools/setup/plan.py), without installing or compiling anything: CPU or CUDA ops,
the architectures, which nvcc and why, which torch lock and index, the mmcv cache key, and the refusals.

A stand-in `nvidia-smi` (and `nvcc`) on PATH plays the GPU machine; a folder of stand-in wheels plays
PyTorch's index. Seconds in all.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

PY = f'{sys.version_info.major}{sys.version_info.minor}'
H200 = 'NVIDIA H200, 580.95.05, 9.0'
STEERING = ('TORCH_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_HOME', 'CUDA_PATH', 'TORCH_INDEX_URL', 'MMCV_WHEEL_CACHE',
            'SETUP_PLAN_ONLY', 'XDG_CACHE_HOME', 'PIP_INDEX_URL', 'PIP_EXTRA_INDEX_URL')


def _script(path, text):
    path.write_text('#!/bin/sh\n' + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def machine(tmp_path):
    """A PATH with nothing CUDA on it (until a test adds stand-ins) and a HOME of its own."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in STEERING}
    env.update(PATH=f'{bin_dir}:/usr/bin:/bin', HOME=str(tmp_path / 'home'), PYTHON=sys.executable)
    # No GPU until a test says so, even on a machine with one (nvidia-smi lives in /usr/bin).
    _script(bin_dir / 'nvidia-smi', 'echo "No devices were found"; exit 6\n')

    class Machine:
        home = tmp_path / 'home'
        cache = tmp_path / 'home' / '.cache' / 'ade20k-train'

        def shell(self):
            return subprocess.run([sys.executable, '-m', 'tools.setup.plan', '--shell'], capture_output=True,
                                  text=True, env=env, cwd=ROOT, check=True).stdout

        def gpu(self, *rows):
            """A stand-in nvidia-smi answering the plan's query with these 'name, driver, cap' rows."""
            listing = '\n'.join(rows)
            _script(bin_dir / 'nvidia-smi',
                    'case "$*" in *--query-gpu=name,driver_version,compute_cap*--format=csv,noheader*)\n'
                    f"  cat <<'EOF'\n{listing}\nEOF\n  ;;\n  *) exit 9;;\nesac\n")

        def toolkit(self, release, where=None):
            """A stand-in CUDA toolkit folder whose bin/nvcc says `release`; returns the folder."""
            home = Path(where or tmp_path / f'cuda-{release}')
            (home / 'bin').mkdir(parents=True, exist_ok=True)
            (home / 'include').mkdir(exist_ok=True)
            (home / 'include' / 'cuda_runtime.h').write_text('')
            _script(home / 'bin' / 'nvcc', 'echo "nvcc: NVIDIA (R) Cuda compiler driver"\n'
                    f'echo "Cuda compilation tools, release {release}, V{release}.0"\n')
            return home

        def nvcc_on_path(self, release):
            home = self.toolkit(release)
            (bin_dir / 'nvcc').symlink_to(home / 'bin' / 'nvcc')

        def run(self, *args, root=ROOT, **settings):
            return subprocess.run(['bash', str(root / 'setup.sh'), *args], capture_output=True, text=True,
                                  env=dict(env, **settings), timeout=120)

        def plan(self, root=ROOT, **settings):
            out = self.run('--plan', root=root, **settings)
            assert out.returncode == 0, out.stderr
            lines = [line[len('[plan] '):] for line in out.stdout.splitlines() if line.startswith('[plan] ')]
            return {key: value.strip() for key, value in (line.split(':', 1) for line in lines
                                                          if not line.startswith('from:'))}

        def refused(self, root=ROOT, args=('--plan',), **settings):
            out = self.run(*args, root=root, **settings)
            assert out.returncode == 2, (out.stdout, out.stderr)
            assert out.stdout == '' and len(out.stderr.strip().splitlines()) == 1, out.stderr
            assert out.stderr.startswith('[setup] refused: ')
            return out.stderr

    return Machine()


def test_cpu_machine_keeps_todays_plan_and_cache_key(machine):
    """No GPU, no TORCH_CUDA_ARCH_LIST (CI): CPU ops, requirements/lock.txt, and the mmcv cache dir that
    setup.sh always used: mmcv-2.1.0-torch<torch.__version__>-py<XY>-cpu."""
    import torch
    machine.nvcc_on_path('13.0')  # a system nvcc alone does not make a CUDA build (no GPU to build for)
    plan = machine.plan()
    assert plan['mmcv ops'] == 'cpu' and plan['gpus'] == 'none'
    assert plan['lock'] == 'requirements/lock.txt' and plan['index'] == 'PyPI'
    assert plan['nvcc'] == 'not needed (CPU ops)'
    assert plan['mmcv cache'] == f'{machine.cache}/wheels/mmcv-2.1.0-torch{torch.__version__}-py{PY}-cpu'
    shell = machine.shell()
    # The stamp hashes "$LOCK mmcv.txt mmcv-build.txt $CUDA_BUILD_LOCK": for CPU the three files of before.
    assert "CUDA_BUILD_LOCK=''" in shell and 'LOCK=requirements/lock.txt' in shell and 'INDEX_ARGS=()' in shell


def test_gpu_machine_builds_cuda_ops_with_the_registry_nvcc(machine):
    machine.gpu(H200)
    plan = machine.plan()
    assert plan['gpus'] == 'NVIDIA H200, driver 580.95.05, compute capability 9.0'
    assert plan['arch list'] == '9.0 (from the GPU (nvidia-smi))'
    assert plan['mmcv ops'] == 'cuda13.0-sm90'
    assert plan['nvcc'].startswith('registry: nvidia-cuda-nvcc 13.0.88 (requirements/mmcv-cuda-build.txt) in '
                                   f'{machine.cache}/cuda/nvcc13.0.88-')
    assert plan['nvcc why'] == 'no system nvcc' or plan['nvcc why'].startswith('system nvcc /')
    assert plan['mmcv cache'].endswith(f'/mmcv-2.1.0-torch2.13.0+cu130-py{PY}-cuda13.0-sm90')


def test_login_node_builds_for_the_arch_list_into_the_gpu_nodes_cache_key(machine):
    """TORCH_CUDA_ARCH_LIST on a machine without a GPU gives the key a GPU machine of that arch looks up."""
    plan = machine.plan(TORCH_CUDA_ARCH_LIST='9.0')
    assert plan['arch list'] == '9.0 (from TORCH_CUDA_ARCH_LIST)' and plan['gpus'] == 'none'
    assert plan['mmcv cache'].endswith(f'/mmcv-2.1.0-torch2.13.0+cu130-py{PY}-cuda13.0-sm90')
    several = machine.plan(TORCH_CUDA_ARCH_LIST='8.0;9.0+PTX')
    assert several['mmcv ops'] == 'cuda13.0-sm80-sm90+ptx'
    machine.gpu('NVIDIA A100-SXM4-80GB, 580.95.05, 8.0', H200)  # the variable wins over the GPUs
    assert machine.plan(TORCH_CUDA_ARCH_LIST='9.0')['mmcv ops'] == 'cuda13.0-sm90'
    assert machine.plan()['arch list'] == '8.0;9.0 (from the GPUs (nvidia-smi))'
    assert 'TORCH_CUDA_ARCH_LIST' in machine.refused(TORCH_CUDA_ARCH_LIST='Hopper')


def test_system_nvcc_of_another_version_is_named_and_not_used(machine):
    machine.gpu(H200)
    machine.nvcc_on_path('12.4')
    plan = machine.plan()
    assert plan['nvcc'].startswith('registry: nvidia-cuda-nvcc 13.0.88')
    assert plan['nvcc why'] == (f'system nvcc {machine.home.parent}/bin/nvcc (CUDA 12.4) not used: '
                                'torch 2.13.0+cu130 is built for CUDA 13.0')


def test_system_nvcc_of_torchs_version_is_used_only_when_cuda_home_names_it(machine):
    machine.gpu(H200)
    machine.nvcc_on_path('13.0')
    plan = machine.plan()
    assert plan['nvcc'].startswith('registry: ')
    assert 'not used: the pinned registry packages are; set CUDA_HOME=' in plan['nvcc why']
    home = machine.toolkit('13.0')
    plan = machine.plan(CUDA_HOME=str(home))
    assert plan['nvcc'] == f'system: {home}/bin/nvcc'
    assert plan['nvcc why'] == "CUDA_HOME is set and its nvcc is CUDA 13.0, torch's version"
    assert plan['mmcv cache'].endswith('-cuda13.0-sm90')


def test_cuda_home_of_another_version_is_refused(machine):
    machine.gpu(H200)
    message = machine.refused(CUDA_HOME=str(machine.toolkit('12.4')))
    assert 'is CUDA 12.4, but torch 2.13.0+cu130 is built for CUDA 13.0. Unset CUDA_HOME' in message


def test_driver_too_old_for_cuda_13_names_the_choices_that_fit(machine):
    machine.gpu('NVIDIA A100-SXM4-80GB, 565.57.01, 8.0')
    message = machine.refused()
    assert 'driver 565.57.01 is older than CUDA 13.0 (TORCH_CUDA=cu130) needs (>= 580)' in message
    # CUDA 12.x builds run on >= 525 (minor-version compatibility), the same table the runs use (common/gpu.py)
    assert 'Use TORCH_CUDA=cu128 (driver >= 525) or TORCH_CUDA=cu126 (driver >= 525), or update the driver' in message
    machine.gpu('Tesla V100-SXM2-32GB, 470.256.02, 7.0')
    assert message != (older := machine.refused()) and 'Update the driver' in older


def test_arch_that_cuda_13_cannot_compile_is_refused(machine):
    machine.gpu('Tesla V100-SXM2-32GB, 580.95.05, 7.0')
    assert ('CUDA 13.0 (TORCH_CUDA=cu130) compiles for compute capability 7.5 to 12.1, not 7.0: '
            'use TORCH_CUDA=cu128 or cu126') in machine.refused()


def test_unknown_choice_is_refused(machine):
    assert 'TORCH_CUDA=cu118 is not one of cu130, cu128, cu126' in machine.refused(TORCH_CUDA='cu118')


# ---------------------------------------------------------------- TORCH_CUDA: another torch build, its own lock

def _sandbox(tmp_path):
    """A copy of the files setup.sh reads before it installs anything."""
    root = tmp_path / 'checkout'
    root.mkdir()
    shutil.copy(ROOT / 'setup.sh', root)
    shutil.copytree(ROOT / 'tools', root / 'tools', ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(ROOT / 'requirements', root / 'requirements')
    (root / 'common').mkdir()
    for name in ('__init__.py', 'gpu.py'):  # the driver table (tools/setup/plan.py imports it)
        shutil.copy(ROOT / 'common' / name, root / 'common')
    return root


def test_choice_whose_lock_is_absent_is_refused_before_anything_is_installed(machine, tmp_path):
    root = _sandbox(tmp_path)
    for choice in ('cu126', 'cu128'):
        assert not (root / f'requirements/lock-{choice}.txt').exists()
        message = machine.refused(root=root, args=(), TORCH_CUDA=choice)  # the real run, not the plan
        assert f'TORCH_CUDA={choice}: requirements/lock-{choice}.txt is not in this checkout' in message
        assert f'python -m tools.setup.make_lock --torch-cuda {choice}' in message
    assert not (root / '.venv').exists()


def _wheel(folder, name, version):
    """A stand-in wheel (metadata only); returns its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f'{name}-{version}.dist-info'
    path = folder / f'{name}-{version}-py3-none-any.whl'
    with zipfile.ZipFile(path, 'w') as whl:
        whl.writestr(f'{dist}/METADATA', f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
        whl.writestr(f'{dist}/WHEEL', 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
        whl.writestr(f'{dist}/RECORD', '')
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _simple_index(folder, wheels):
    """A PEP 503 index in a folder (what pip reads at file://...): {project: [(version, ...)]}."""
    for name, versions in wheels.items():
        for version in versions:
            _wheel(folder / name, name, version)
        links = ''.join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted((folder / name).glob('*.whl')))
        (folder / name / 'index.html').write_text(f'<html><body>\n{links}</body></html>\n')


def test_torch_cuda_choice_takes_its_lock_index_and_cache_key(machine, tmp_path):
    """TORCH_CUDA=cu126 with a lock of stand-in wheels: torch and torchvision come from PyTorch's index
    (here a `pip download`-style folder, TORCH_INDEX_URL), the rest from the registry (a local PEP 503
    index, PIP_INDEX_URL), each file checked against the lock's hash."""
    root = _sandbox(tmp_path)
    torch_index = tmp_path / 'pytorch-whl-cu126'
    hashes = {'torch': _wheel(torch_index, 'torch', '2.13.0+cu126'),
              'torchvision': _wheel(torch_index, 'torchvision', '0.28.0+cu126')}
    registry = tmp_path / 'registry'
    _simple_index(registry, {'torch': ['2.13.0'], 'numpy': ['1.26.4']})  # the registry's torch is CUDA 13.0
    hashes['numpy'] = hashlib.sha256((registry / 'numpy' / 'numpy-1.26.4-py3-none-any.whl').read_bytes()).hexdigest()
    pins = {'torch': '2.13.0+cu126', 'torchvision': '0.28.0+cu126', 'numpy': '1.26.4'}
    (root / 'requirements' / 'lock-cu126.txt').write_text(
        '# stand-in lock\n' + ''.join(f'{n}=={pins[n]} \\\n    --hash=sha256:{hashes[n]}\n' for n in pins))
    settings = dict(TORCH_CUDA='cu126', TORCH_INDEX_URL=str(torch_index), PIP_INDEX_URL=registry.as_uri())

    plan = machine.plan(root=root, **settings)
    assert plan['torch'] == '2.13.0+cu126 for CUDA 12.6 (TORCH_CUDA=cu126, TORCH_CUDA; needs driver >= 525)'
    assert plan['lock'] == 'requirements/lock-cu126.txt'
    assert plan['index'] == f'PyPI and {torch_index} (--find-links {torch_index})'
    assert plan['mmcv cache'] == f'{machine.cache}/wheels/mmcv-2.1.0-torch2.13.0+cu126-py{PY}-cpu'

    out = machine.run('--plan', '--resolve', root=root, **settings)
    assert out.returncode == 0, out.stderr
    sources = dict(line.split()[2:4] for line in out.stdout.splitlines() if line.startswith('[plan] from: '))
    assert sources == {'torch==2.13.0+cu126': (torch_index / 'torch-2.13.0+cu126-py3-none-any.whl').as_uri(),
                       'torchvision==0.28.0+cu126': (torch_index / 'torchvision-0.28.0+cu126-py3-none-any.whl').as_uri(),
                       'numpy==1.26.4': (registry / 'numpy' / 'numpy-1.26.4-py3-none-any.whl').as_uri()}

    # On a GPU machine with a driver too old for CUDA 13.0: CUDA 12.6 ops with cu126's own compiler lock.
    machine.gpu('NVIDIA H100 80GB HBM3, 565.57.01, 9.0')
    assert 'requirements/mmcv-cuda-build-cu126.txt (the CUDA compiler packages for CUDA 12.6) is not in this' \
        in machine.refused(root=root, **settings)
    (root / 'requirements' / 'mmcv-cuda-build-cu126.txt').write_text(
        f'nvidia-cuda-nvcc-cu12==12.6.85 \\\n    --hash=sha256:{"0" * 64}\n')
    plan = machine.plan(root=root, **settings)
    assert plan['mmcv ops'] == 'cuda12.6-sm90'
    assert plan['nvcc'].startswith('registry: nvidia-cuda-nvcc 12.6.85 (requirements/mmcv-cuda-build-cu126.txt)')
    assert plan['mmcv cache'] == f'{machine.cache}/wheels/mmcv-2.1.0-torch2.13.0+cu126-py{PY}-cuda12.6-sm90'
    machine.gpu('NVIDIA GeForce RTX 5090, 570.86.10, 12.0')  # Blackwell: CUDA 12.6 cannot compile for it
    assert 'not 12.0: use TORCH_CUDA=cu128' in machine.refused(root=root, **settings)
    # Without TORCH_INDEX_URL the plan names PyTorch's index for the choice.
    machine.gpu('NVIDIA H100 80GB HBM3, 565.57.01, 9.0')
    settings.pop('TORCH_INDEX_URL')
    assert machine.plan(root=root, **settings)['index'] == (
        'PyPI and https://download.pytorch.org/whl/cu126 (--extra-index-url https://download.pytorch.org/whl/cu126)')


# ---------------------------------------------------------------- tools/setup/make_lock.py for the locks setup.sh reads

def _make_lock():
    from tools.setup import make_lock
    return make_lock


def test_committed_cuda_build_lock_matches_torchs_lock():
    """requirements/mmcv-cuda-build.txt was made for the cuda-toolkit version torch's lock pins, and pins
    the nvcc of torch's CUDA version."""
    make_lock = _make_lock()
    lock = (ROOT / 'requirements/lock.txt').read_text()
    build = (ROOT / 'requirements/mmcv-cuda-build.txt').read_text()
    wanted = make_lock.cuda_build_requirements(lock, '13.0')
    assert f'# The CUDA compiler for mmcv\'s CUDA ops: {"; ".join(wanted)}.' in build, \
        'run python -m tools.setup.make_lock --cuda-build'
    assert make_lock.locked(build, 'nvidia-cuda-nvcc').startswith('13.0.')
    assert make_lock.locked(build, 'nvidia-cuda-runtime') == make_lock.locked(lock, 'nvidia-cuda-runtime')
    pins = [line for line in build.splitlines() if line and not line.startswith(('#', ' '))]
    assert len(pins) == build.count('--hash=sha256:') == 7 and all(' \\' in line for line in pins)


def test_make_lock_for_a_torch_cuda_choice_asks_pytorchs_index(tmp_path, monkeypatch):
    """What `make_lock --torch-cuda cu126` asks pip for and writes (pip's answers stood in for: the
    index is not reachable here)."""
    make_lock = _make_lock()
    (tmp_path / 'requirements').mkdir()
    shutil.copy(ROOT / 'requirements/stack.in', tmp_path / 'requirements')
    monkeypatch.setattr(make_lock, 'ROOT', tmp_path)
    monkeypatch.setattr(make_lock, 'STACK', tmp_path / 'requirements/stack.in')
    asked = []

    def resolve(requirements, no_deps, index_args=()):
        asked.append((requirements, no_deps, tuple(index_args)))
        pins = [r.replace('[nvcc,cccl,cudart]', '').replace('~=', '==').split(';')[0] for r in requirements]
        pins = [p if '==' in p else f'{p}==1.0' for p in pins]
        return [dict(metadata=dict(name=p.split('==')[0], version=p.split('==')[1]),
                     download_info=dict(archive_info=dict(hashes=dict(sha256='0' * 64)))) for p in pins] + (
            [dict(metadata=dict(name='nvidia-cuda-runtime-cu12', version='12.6.77'),
                  download_info=dict(archive_info=dict(hashes=dict(sha256='1' * 64))))] if not no_deps else [])

    monkeypatch.setattr(make_lock, 'resolve', resolve)
    make_lock.main(['--torch-cuda', 'cu126'])
    stack, mm, build = asked
    assert 'torch==2.13.0+cu126' in stack[0] and 'torchvision==0.28.0+cu126' in stack[0]
    assert stack[2] == ('--extra-index-url', 'https://download.pytorch.org/whl/cu126')
    assert mm[1] is True and mm[2] == ()  # the OpenMMLab packages: the registry, without their dependencies
    assert build[0] == ['cuda-toolkit[nvcc,cccl,cudart]~=12.6.0', 'nvidia-cuda-runtime-cu12==12.6.77']
    assert build[2] == ()  # NVIDIA's compiler packages come from the registry
    lock = (tmp_path / 'requirements/lock-cu126.txt').read_text()
    assert lock.startswith('# Generated by `python -m tools.setup.make_lock --torch-cuda cu126` from '
                           'requirements/stack.in (torch and torchvision from https://download.pytorch.org/whl/cu126). '
                           'Do not edit.\n')
    assert 'torch==2.13.0+cu126 \\\n    --hash=sha256:' in lock
    assert 'cuda-toolkit==12.6.0' in (tmp_path / 'requirements/mmcv-cuda-build-cu126.txt').read_text()


def test_cuda_home_is_laid_out_from_both_package_layouts(tmp_path):
    """tools/setup/cuda_home.py: CUDA 13's shared nvidia/cu13 and CUDA 12's folder per package, the build
    target first, then .venv's packages (the cuBLAS headers); libcudart.so for -lcudart."""
    from tools.setup import cuda_home

    def files(site, *paths):
        for path in paths:
            (site / path).parent.mkdir(parents=True, exist_ok=True)
            (site / path).write_text(str(site))
        return site

    for cu, nvcc_pkg, runtime_pkg, cublas_pkg, so in (('13', 'cu13', 'cu13', 'cu13', '13'),
                                                       ('12', 'cuda_nvcc', 'cuda_runtime', 'cublas', '12')):
        build = files(tmp_path / f'build{cu}', f'nvidia/{nvcc_pkg}/bin/nvcc', f'nvidia/{nvcc_pkg}/nvvm/bin/cicc',
                      f'nvidia/{runtime_pkg}/include/cuda_runtime.h', f'nvidia/{runtime_pkg}/lib/libcudart.so.{so}',
                      f'nvidia/{nvcc_pkg}/include/crt/host_config.h')
        venv = files(tmp_path / f'venv{cu}', f'nvidia/{runtime_pkg}/include/cuda_runtime.h',
                     f'nvidia/{cublas_pkg}/include/cublas_v2.h', f'nvidia/{runtime_pkg}/include/crt/extra.h')
        home = cuda_home.assemble(tmp_path / f'home{cu}', [build, venv])
        assert (home / 'bin/nvcc').resolve() == (build / f'nvidia/{nvcc_pkg}/bin/nvcc')
        assert (home / 'include/cuda_runtime.h').read_text() == str(build)  # the build target wins
        assert (home / 'include/cublas_v2.h').read_text() == str(venv)
        assert {p.name for p in (home / 'include/crt').iterdir()} == {'host_config.h', 'extra.h'}
        assert (home / 'lib64/libcudart.so').resolve() == build / f'nvidia/{runtime_pkg}/lib/libcudart.so.{so}'
    with pytest.raises(SystemExit, match='no nvcc'):
        cuda_home.assemble(tmp_path / 'empty', [tmp_path / 'venv13'])
