"""The two exceptions that are not bugs: a sample a stage must skip, and a user's bad input or setting."""


class SampleError(Exception):
    """A sample that cannot be used. `reason` is a short ledger code, `detail` a human explanation."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UserError(ValueError):
    """An argument, setting or input file the user can fix: the commands report it in one line.

    Any other exception is a bug and keeps its traceback.
    """
