"""One error type for everything a user can fix before training starts."""


class SetupError(Exception):
    """A problem with the dataset, a pretrained file, a checkpoint or the installation.

    `what` says what is wrong (naming the path); `fix` says what to do about it. The train entry
    point prints both and exits with code 2 before anything is built or a GPU is touched.
    """

    def __init__(self, what: str, fix: str = '', exit_code: int = 2):
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self):
        return f'{self.what}\n  -> {self.fix}' if self.fix else self.what
