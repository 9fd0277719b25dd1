"""The shape of common/ (common/__init__.py is its map): every module is on the map, imports go only
downward (or within a layer), there is no import loop, and no module outgrows one job's size."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT

COMMON = ROOT / 'common'
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
