"""README.md stays true: the script table is the generated one and names every script."""
from conftest import ROOT, SCRIPTS


def test_scripts_table_is_current():
    from common import zoo
    readme = (ROOT / 'README.md').read_text()
    assert zoo.table() in readme, 'run `python -m common.zoo --write`'
    for name in SCRIPTS:
        assert f'`{name}.py`' in readme


def test_readme_opens_with_the_two_commands():
    head = (ROOT / 'README.md').read_text().split('\n```\n')[0]
    assert 'make demo' in head and 'make test' in head
