"""The shape of common/ (common/__init__.py is its map): every module is on the map, imports go only
downward (or within a layer), there is no import loop, and no module outgrows one job's size. And of
tools/ (tools/__init__.py): common/ never imports it, each job folder is a package whose docstring
names its commands, and each command answers --help as `python -m tools.<job>.<name>`."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

COMMON = ROOT / 'common'
TOOLS = ROOT / 'tools'
MAX_LINES = 350


def modules():
    """'cli', 'infer', 'infer.model', ... -> path, for every module of common/."""
    found = {}
    for path in sorted(COMMON.rglob('*.py')):
        parts = path.relative_to(COMMON).with_suffix('').parts
        if parts == ('__init__',):
            continue
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = path
    return found


def imports_of(path, known):
    """The project modules `path` imports, anywhere in it (function-level imports too):
    `from common import cli` and `from common.infer import evaluate` name cli and infer.evaluate,
    `from common.infer.model import build` names infer.model, `import common.x` names x."""
    def resolve(name):
        while name and name not in known:
            name = name.rpartition('.')[0]
        return name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == 'common':
            base = node.module.removeprefix('common').lstrip('.')
            for alias in node.names:
                found.add(f'{base}.{alias.name}'.lstrip('.') if f'{base}.{alias.name}'.lstrip('.') in known
                          else resolve(base))
        elif isinstance(node, ast.Import):
            found |= {resolve(a.name.removeprefix('common.')) for a in node.names if a.name.startswith('common.')}
    return found - {''}


def graph():
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_every_module_is_on_the_map():
    from common import LAYERS
    assert set(modules()) == set(LAYERS), 'common/__init__.py LAYERS must list exactly the modules of common/'
    doc = (COMMON / '__init__.py').read_text()
    for name in modules():
        assert name in doc, f'{name} is not described in common/__init__.py'


def test_imports_go_only_downward():
    from common import LAYERS
    upward = [f'{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})'
              for a, targets in graph().items() for b in targets if LAYERS[b] > LAYERS[a]]
    assert not upward, upward


def test_nothing_in_common_imports_runtime():
    assert [a for a, targets in graph().items() if 'runtime' in targets] == []


def test_no_import_loop():
    edges = graph()
    state, loops = {}, []

    def visit(node, path):
        state[node] = 'open'
        for target in sorted(edges[node]):
            if state.get(target) == 'open':
                loops.append(' -> '.join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 'done'
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not loops, loops


@pytest.mark.parametrize('name', sorted(modules()))
def test_no_module_outgrows_its_job(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f'common/{name}: {lines} lines (at most {MAX_LINES}): split it by concern'


def test_the_scripts_use_only_the_recipe_pieces_and_the_top():
    """A train_*.py reads like a recipe: it imports recipe pieces, cli and runtime, nothing of the run."""
    allowed = {'ade20k', 'schedules', 'models', 'pretrained', 'cli', 'runtime', 'errors'}
    for script in sorted(ROOT.glob('train_*.py')):
        used = imports_of(script, modules())
        assert used <= allowed, f'{script.name} imports {sorted(used - allowed)}'


# ---------------------------------------------------------------- tools/: beside the run path, never in it

def tools_imported(path):
    """Where `path` imports tools/ (`import tools.x`, `from tools.x import y`, `from tools import x`, at
    any depth: function-level imports too), or names a module of it for importlib ('tools.x.y')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split('.')[0] == 'tools':
            found.append(f'line {node.lineno}: from {node.module} import ...')
        elif isinstance(node, ast.Import):
            found += [f'line {node.lineno}: import {a.name}' for a in node.names if a.name.split('.')[0] == 'tools']
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.fullmatch(r'tools(\.\w+)+', node.value)):
            found.append(f'line {node.lineno}: {node.value!r}')
    return found


def test_common_never_imports_tools():
    """What `python train_x.py` runs is common/ alone: a measurement or maintenance command is never on it."""
    found = [f'{path.relative_to(ROOT)} {where}' for path in sorted(COMMON.rglob('*.py'))
             for where in tools_imported(path)]
    assert not found, found


def test_the_check_sees_each_kind_of_import(tmp_path):
    source = tmp_path / 'x.py'
    source.write_text('import tools.bench.bench\nfrom tools import bench\n\ndef f():\n    from tools.gpu_check import '
                      'check\n    return __import__("importlib").import_module("tools.recipes.zoo")\n'
                      'from common import tools_like  # not tools/\n')
    assert len(tools_imported(source)) == 4


def jobs():
    return sorted(p for p in TOOLS.iterdir() if p.is_dir() and not p.name.startswith(('_', '.')))


def commands():
    """'bench.bench', 'setup.plan', ...: each tools/<job>/<name>.py with a module-level main()."""
    found = []
    for job in jobs():
        for path in sorted(job.glob('*.py')):
            tree = ast.parse(path.read_text())
            if any(isinstance(n, ast.FunctionDef) and n.name == 'main' for n in tree.body):
                found.append(f'{job.name}.{path.stem}')
    return found


def test_every_job_is_a_package_whose_docstring_names_its_commands():
    top = ast.get_docstring(ast.parse((TOOLS / '__init__.py').read_text()))
    assert jobs(), 'tools/ has no job folders'
    for job in jobs():
        assert job.name in top, f'tools/__init__.py does not describe tools/{job.name}/'
        init = job / '__init__.py'
        assert init.is_file(), f'tools/{job.name}/ is not a package (no __init__.py)'
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f'tools/{job.name}/__init__.py has no docstring saying what its commands are'
        for path in sorted(job.iterdir()):
            if path.suffix in ('.py', '.sh') and path.name != '__init__.py':
                name = path.stem if path.suffix == '.py' else path.name
                assert name in doc, f'tools/{job.name}/__init__.py does not describe {path.name}'


def test_no_tool_edits_sys_path():
    """Each command runs as `python -m tools.<job>.<name>` from the repository root: nothing to patch."""
    found = [str(p.relative_to(ROOT)) for p in sorted(TOOLS.rglob('*.py')) if 'sys.path' in p.read_text()]
    assert not found, found


@pytest.mark.parametrize('command', commands())
def test_every_command_answers_help(command):
    proc = subprocess.run([sys.executable, '-m', f'tools.{command}', '--help'], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('usage:'), proc.stdout[:500]
