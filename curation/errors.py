"""The one exception a stage raises for a sample it must skip."""


class SampleError(Exception):
    """A sample that cannot be used. `reason` is a short ledger code, `detail` a human explanation."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
