"""The one way a raw row is refused: `RowRejected` with a short ledger reason and a detail for people."""

from __future__ import annotations


class RowRejected(ValueError):
    """A raw row that cannot become a Cauldron row; `reason` is a short ledger code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
