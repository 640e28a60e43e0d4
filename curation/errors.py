"""Rejections and the two exceptions that are not bugs: a sample a stage must skip, and a user's fixable mistake.

A rejection is spelled one way: `Rejection(reason, detail)`, a short ledger code and an explanation for
people. Code that returns its verdict (a cleaning step, a batch scorer) returns a `Rejection`; code deep in
a call stack (a decoder, a parser) raises `SampleError`, which carries one (`error.rejection`). Where a
rejection travels apart from its sample (a stream of samples and rejections) it names the sample's id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Rejection:
    """Why a sample is dropped: `reason` is a short ledger code, `detail` a human explanation."""

    reason: str
    detail: str = ""
    id: str | None = None  # the sample's id, set where the rejection travels without its sample

    def of(self, sample_id: str) -> Rejection:
        """The same rejection, naming the sample it drops."""
        return replace(self, id=sample_id)


class SampleError(Exception):
    """A sample that cannot be used, raised where returning is awkward; `rejection` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.rejection = Rejection(reason, detail)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # rebuilt from reason and detail in another process
        return type(self), (self.reason, self.detail)

    @property
    def reason(self) -> str:
        return self.rejection.reason

    @property
    def detail(self) -> str:
        return self.rejection.detail


class UserError(ValueError):
    """An argument, setting or input file the user can fix: the commands report it in one line.

    Any other exception is a bug and keeps its traceback.
    """
