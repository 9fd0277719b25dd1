"""One error type for everything a user can fix before training starts, and its one rendering."""
import sys
from contextlib import contextmanager


class SetupError(Exception):
    """A problem with the dataset, a pretrained file, a checkpoint, a setting or the installation.

    `what` says what is wrong (naming the path or setting); `fix` says what to do about it. The
    commands print both (`report`) and exit with `exit_code` (2) before anything is built or a GPU is
    touched.
    """

    def __init__(self, what: str, fix: str = '', exit_code: int = 2):
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self):
        return f'{self.what}\n  -> {self.fix}' if self.fix else self.what


def report(err, label='ERROR', blank_line=False, exit_code=None):
    """Print `label: what` and `  -> fix` on stderr and exit with `exit_code` (default: the error's)."""
    print(f'{chr(10) if blank_line else ""}{label}: {err}', file=sys.stderr)
    sys.exit(err.exit_code if exit_code is None else exit_code)


@contextmanager
def reported(label='ERROR', blank_line=False, exit_code=None):
    """A command's body: a SetupError raised inside is reported (above) instead of a traceback."""
    try:
        yield
    except SetupError as err:
        report(err, label, blank_line, exit_code)
