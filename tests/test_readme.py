"""README.md and docs/ stay true: the script and recipe tables are the generated ones and name every
script, the README stays short and opens with its two commands, and every path, `python -m` module and
script flag they name exists, with no placeholder left."""
import functools
import importlib.util
import re

from conftest import ROOT, SCRIPTS

README = ROOT / 'README.md'
DOCS = [README, *sorted((ROOT / 'docs').glob('*.md'))]
# The measured numbers' page holds commands too: its modules and script flags are checked as well.
WITH_COMMANDS = [*DOCS, ROOT / 'benchmarks' / 'README.md']
MAX_README_LINES = 250

# Paths the documents name that the repository does not hold, because something makes them.
MADE_LATER = {
    'work_dirs/': 'every run writes its WORK_DIR there',
    'data/ade/': 'python -m common.download_ade20k',
    'data/demo': 'made by --demo (python -m common.demo_data data/demo)',
    'benchmarks/h100': 'written by python -m tools.bench.vs_stock --out benchmarks/h100',
    'requirements/lock-cu126.txt': 'made by python -m tools.setup.make_lock --torch-cuda cu126 (docs/install.md)',
    'requirements/lock-cu128.txt': 'made by python -m tools.setup.make_lock --torch-cuda cu128 (docs/install.md)',
    'train_emanet.py': 'the worked example of docs/add_a_model.md, made by the reader',
}
PRETRAINED_FILE = re.compile(r'pretrain/[^/]+\.pth')   # fetched or converted (python -m common.pretrained)
# The script a worked example starts from: its flags are that script's.
EXAMPLE_FROM = {'train_emanet.py': 'train_fcn.py'}

FENCE = re.compile(r'^```[^\n]*\n(.*?)^```[^\n]*$', re.M | re.S)
SPAN = re.compile(r'`([^`\n]+)`')
LINK = re.compile(r'\]\(([^)\s]+)\)')
TOKEN = re.compile(r'[\w./<>*+-]+')
PATHISH = re.compile(r'(?:train_[\w*]+\.py|(?:common|tools|docs|benchmarks|requirements|tests|data|pretrain|work_dirs)'
                     r'/\S*|bench\.sh|setup\.sh|Makefile)')
MODULE = re.compile(r'\bpython3?\s+-m\s+([A-Za-z_][\w.]*)')
# A script run directly: after python (any path to it) or after a launcher's last --option=value.
LAUNCH = re.compile(r'(?:^|\s)(?:\S*python3?|--[\w-]+=\S+)\s+(train_\w+\.py)([^#`|\n]*)', re.M)


def _zoo():
    try:
        from tools.recipes import zoo
    except ImportError:
        from common import zoo
    return zoo


def _parts(path):
    """(code: fenced blocks and inline spans, links, prose without fenced blocks) of a markdown file."""
    text = path.read_text()
    prose = FENCE.sub('', text)
    return FENCE.findall(text) + SPAN.findall(prose), LINK.findall(prose), prose


def _slug(heading):
    """GitHub's anchor of a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _exists(rel):
    """Whether a repository path exists; `*` must match something, and a placeholder part (`<name>`,
    DIR) stands for whatever a run names, so the folder before it must exist."""
    if '*' in rel:
        return any(ROOT.glob(rel.rstrip('/')))
    parts = [p for p in rel.split('/') if p]
    for i, part in enumerate(parts):
        if '<' in part or re.fullmatch(r'[A-Z_]{2,}', part):
            return (ROOT.joinpath(*parts[:i])).is_dir()
    return (ROOT / rel).exists()


def _made_later(rel):
    return bool(PRETRAINED_FILE.fullmatch(rel)) or any(
        rel == k.rstrip('/') or rel.startswith(k.rstrip('/') + '/') for k in MADE_LATER)


@functools.lru_cache(maxsize=None)
def _flags(script):
    """Every option string a script's command line accepts (common/cli.py builds it from the script)."""
    from common import cli, scripts
    module = scripts.load(EXAMPLE_FROM.get(script, script))
    parser, _ = cli.build_parser(vars(module), doc=module.__doc__)
    return frozenset(parser._option_string_actions)


def test_scripts_table_is_current():
    zoo = _zoo()
    readme = README.read_text()
    assert zoo.table() in readme, 'run `python -m tools.recipes.zoo --write`'
    for name in SCRIPTS:
        assert f'`{name}.py`' in readme


def test_recipes_table_is_current():
    from tools.recipes import recipes
    text = (ROOT / 'docs' / 'recipes.md').read_text()
    assert recipes.table() in text, 'run `python -m tools.recipes.zoo --write`'


def test_recipes_dump_loads(tmp_path):
    """--recipes --dump writes each config under its official name, loadable, and recipes.json naming it."""
    import json
    from mmengine.config import Config
    _zoo().main(['--recipes', '--dump', str(tmp_path)])
    rows = json.loads((tmp_path / 'recipes.json').read_text())
    assert {'config', 'command', 'deviations'} <= set(rows[0])
    for row in rows:
        cfg = Config.fromfile(str(tmp_path / row['config'].split('/')[-1]))
        assert cfg.train_cfg.max_iters > 0 and row['command'].startswith('python train_')


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split('\n```\n')[0]
    assert 'make demo' in head and 'make test' in head


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines < MAX_README_LINES, f'README.md has {lines} lines: move detail to docs/'


def test_every_path_named_exists():
    """Paths in code (blocks and spans) and relative links of README.md and docs/*.md exist, but for
    what a run or a command makes (MADE_LATER, pretrain/*.pth); a link's #anchor is a heading there."""
    missing = []
    for doc in DOCS:
        code, links, _ = _parts(doc)
        for token in (t.rstrip('.,:;') for chunk in code for t in TOKEN.findall(chunk)):
            if PATHISH.fullmatch(token) and not _made_later(token.rstrip('/')) and not _exists(token):
                missing.append(f'{doc.relative_to(ROOT)}: `{token}`')
        for link in links:
            if re.match(r'[a-z]+:', link):
                continue  # https:, mailto:
            target, _, anchor = link.partition('#')
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists() or ROOT.resolve() not in [path, *path.parents]:
                missing.append(f'{doc.relative_to(ROOT)}: link {link}')
            elif anchor and path.suffix == '.md':
                headings = [_slug(line.lstrip('#')) for line in _parts(path)[2].splitlines() if line.startswith('#')]
                if anchor not in headings:
                    missing.append(f'{doc.relative_to(ROOT)}: link {link} (no such heading)')
    assert not missing, 'named but not in the repository:\n' + '\n'.join(missing)


def test_every_module_named_imports():
    """`python -m X` names a module that exists (importlib.util.find_spec; nothing is run)."""
    missing = []
    for doc in WITH_COMMANDS:
        for name in sorted({n for n in MODULE.findall(doc.read_text()) if not n.endswith(".")}):  # not tools.<job>
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                found = False  # a parent package is missing
            if not found:
                missing.append(f'{doc.relative_to(ROOT)}: python -m {name}')
    assert not missing, 'no such module:\n' + '\n'.join(missing)


def test_every_script_flag_named_is_accepted():
    """Each flag of a `python train_x.py ...` command line is one train_x.py accepts, and each flag in a
    flags table (README's settings, docs/speed.md's levers) is one that every script accepts."""
    wrong = []
    for doc in WITH_COMMANDS:
        text = doc.read_text()
        for script, args in LAUNCH.findall(text):
            for flag in re.findall(r'(?:^|\s)(--[\w-]+)', args):
                if flag not in _flags(script):
                    wrong.append(f'{doc.relative_to(ROOT)}: {script} {flag}')
        table = None
        for line in _parts(doc)[2].splitlines():
            if not line.startswith('|'):
                table = None
                continue
            cells = [c.strip() for c in line.strip('|').split('|')]
            if table is None:
                table = cells[0] in ('flag', 'setting (flag)')
                continue
            if table:
                for flag in (f for span in SPAN.findall(line) for f in re.findall(r'--[\w-]+', span)):
                    for script in SCRIPTS:
                        if flag not in _flags(f'{script}.py'):
                            wrong.append(f'{doc.relative_to(ROOT)} flags table: {flag} ({script}.py)')
    assert not wrong, 'flags the scripts do not accept:\n' + '\n'.join(sorted(set(wrong)))


def test_no_placeholder_or_workspace_path_left():
    found = [f'{doc.relative_to(ROOT)}:{i}: {line.strip()}' for doc in WITH_COMMANDS
             for i, line in enumerate(doc.read_text().splitlines(), 1)
             if any(word in line for word in ('TBD', 'TODO', '../' + 'shared'))]  # split: this file is scanned too
    assert not found, '\n'.join(found)


def test_docs_speak_of_the_project_not_of_its_making():
    """What the project is and does, not how it came to be."""
    history = re.compile(r'\b(?:session|issues?|the brief|CEO|we (?:added|changed|fixed|moved))\b', re.I)
    found = [f'{doc.relative_to(ROOT)}:{i}: {line.strip()}' for doc in WITH_COMMANDS
             for i, line in enumerate(doc.read_text().splitlines(), 1) if history.search(line)]
    assert not found, '\n'.join(found)
