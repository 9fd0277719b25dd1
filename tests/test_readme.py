"""README.md and docs/recipes.md stay true: the tables of scripts (README.md) and of all recipes
(docs/recipes.md) are the generated ones and name every script."""
import pytest

from conftest import ROOT, SCRIPTS


def test_scripts_table_is_current():
    from tools.recipes import zoo
    readme = (ROOT / 'README.md').read_text()
    assert zoo.table() in readme, 'run `python -m tools.recipes.zoo --write`'
    for name in SCRIPTS:
        assert f'`{name}.py`' in readme


def test_recipes_table_is_current():
    from tools.recipes import recipes
    assert recipes.table() in (ROOT / 'docs' / 'recipes.md').read_text(), 'run `python -m tools.recipes.zoo --write`'


@pytest.mark.slow
def test_recipes_dump_loads(tmp_path):
    """--recipes --dump writes each config under its official name, loadable, and recipes.json naming it."""
    import json
    from mmengine.config import Config
    from tools.recipes import zoo
    zoo.main(['--recipes', '--dump', str(tmp_path)])
    rows = json.loads((tmp_path / 'recipes.json').read_text())
    assert {'config', 'command', 'deviations'} <= set(rows[0])
    for row in rows:
        cfg = Config.fromfile(str(tmp_path / row['config'].split('/')[-1]))
        assert cfg.train_cfg.max_iters > 0 and row['command'].startswith('python train_')


def test_readme_opens_with_the_two_commands():
    head = (ROOT / 'README.md').read_text().split('\n```\n')[0]
    assert 'make demo' in head and 'make test' in head
