"""Lay out a CUDA_HOME (bin/, include/, lib64/) from NVIDIA's pip packages, for building mmcv's CUDA ops.

    python -m tools.setup.cuda_home DEST SITE [SITE ...]

Each SITE is a folder holding NVIDIA's `nvidia/` packages (the target setup.sh installed
requirements/mmcv-cuda-build*.txt into, then .venv's site-packages for the cuBLAS/cuSPARSE/cuSOLVER
headers that come with torch). CUDA 13 packages share nvidia/cu13/{bin,include,lib}; CUDA 12 ones have
a folder each (nvidia/cuda_nvcc, nvidia/cuda_runtime, nvidia/cublas, ...). DEST gets symbolic links to
all of them (the first SITE wins where two hold the same file) and, for each `libX.so.N` without a
`libX.so`, that link too: the linker's -lcudart needs it and the packages ship only the versioned name.
nvcc finds its own nvvm/ and crt/ beside its real path, so bin/ links the files, not the folder.
"""
import argparse
import os
from pathlib import Path


def _merge(src, dest):
    """Link every entry of folder src into folder dest, descending into folders both hold."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if target.is_symlink() and target.is_dir() and entry.is_dir():
            linked = Path(os.readlink(target))
            target.unlink()
            _merge(linked, target)  # make it a real folder, then add both sides
            _merge(entry, target)
        elif target.is_dir() and not target.is_symlink() and entry.is_dir():
            _merge(entry, target)
        elif not target.exists() and not target.is_symlink():
            target.symlink_to(entry.resolve())


def packages(sites):
    """The package roots: nvidia/cu13, nvidia/cuda_nvcc, ... in SITE order."""
    roots = []
    for site in sites:
        nvidia = Path(site) / 'nvidia'
        if nvidia.is_dir():
            roots += sorted(p for p in nvidia.iterdir() if p.is_dir() and not p.name.startswith('_'))
    return roots


def assemble(dest, sites):
    dest = Path(dest)
    for root in packages(sites):
        for name, into in (('bin', 'bin'), ('include', 'include'), ('lib', 'lib64'), ('lib64', 'lib64'),
                           ('nvvm', 'nvvm')):
            if (root / name).is_dir():
                _merge(root / name, dest / into)
    lib = dest / 'lib64'
    if lib.is_dir():
        for so in sorted(lib.glob('lib*.so.*')):
            plain = lib / (so.name.split('.so.')[0] + '.so')
            if not plain.exists():
                plain.symlink_to(so.resolve())
    nvcc = dest / 'bin' / 'nvcc'
    if not nvcc.exists():
        raise SystemExit(f'no nvcc in {", ".join(map(str, sites))}: is the CUDA build lock installed there?')
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dest', help='the CUDA_HOME to lay out')
    parser.add_argument('sites', nargs='+', metavar='site', help="folders holding NVIDIA's nvidia/ packages")
    args = parser.parse_args(argv)
    print(assemble(args.dest, args.sites))


if __name__ == '__main__':
    main()
