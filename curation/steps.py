"""Cleaning steps: one shape for every filter of a pipeline, and the runner that keeps the books.

A step holds one rule. It has a `name`, the ledger `stage` its rejections are filed under, `settings()`
(what the run fingerprint records of it) and `apply(sample)`, which returns
- the sample, unchanged or as an edited copy, to keep it;
- a `Rejection(reason, detail)` to drop it;
- `Trimmed(sample, removed, rejection=None)` when it took parts out (image nodes), each `Removed` part
  with its reason; with a rejection when what is left cannot be used.
`Filter` is the base for the common case, a rule that only keeps or rejects (`reject(sample)`).

The runner (`Steps`) applies the steps in order to one sample at a time; the first rejection ends the
sample and becomes its ledger row under that step's stage, and every removed part is listed with the
sample's id. So input = kept + ledgered holds whatever the steps are.

Fingerprint: a pipeline records `Steps.fingerprint()` (each step's name and settings) with what it
writes, so a rerun with another step list or setting redoes the work and an unchanged one resumes. A
step whose rule changes while its settings stay the same should carry a `version` setting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from curation.errors import Rejection, UserError
from curation.ledger import LedgerEntry


class Sample(Protocol):
    """What a step runs on: anything with a stable `id` (an interleaved document, a pair)."""

    @property
    def id(self) -> str: ...


S = TypeVar("S", bound=Sample)


@dataclass(frozen=True)
class Removed:
    """A part a step took out of a sample (an image node): where it came from, and why."""

    url: str | None
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Trimmed(Generic[S]):
    """A sample with parts taken out; `rejection` is set when what is left cannot be used."""

    sample: S
    removed: tuple[Removed, ...]
    rejection: Rejection | None = None


class Step(Generic[S]):
    """One cleaning rule. Subclasses set `name` and `stage` and write `apply`.

    `changes_text`: whether the step may change the text of what it keeps. Scores of text computed
    after the steps (perplexity) are reused across runs only while no such step changes.
    """

    name: str = ""
    stage: str = ""
    changes_text: ClassVar[bool] = True

    def settings(self) -> dict[str, Any]:
        """What the fingerprint records: by default the public attributes (JSON values) but name and stage."""
        return {key: value for key, value in vars(self).items() if not key.startswith("_") and key not in ("name", "stage")}

    def apply(self, sample: S) -> S | Rejection | Trimmed[S]:
        raise NotImplementedError(f"{type(self).__name__} does not define apply(sample)")

    def fingerprint(self) -> dict[str, Any]:
        """`{"step": name, "settings": ...}`; settings that are not JSON values are a UserError naming the step."""
        settings = self.settings()
        try:
            json.dumps(settings, sort_keys=True, default=_path_text)
        except (TypeError, ValueError) as error:
            raise UserError(f"step {self.name!r}: settings() must return JSON values ({error})") from None
        return {"step": self.name, "settings": settings}


class Filter(Step[S]):
    """A step that only keeps or rejects: `reject(sample)` returns why the sample must go, or None."""

    changes_text: ClassVar[bool] = False

    def reject(self, sample: S) -> Rejection | None:
        raise NotImplementedError(f"{type(self).__name__} does not define reject(sample)")

    def apply(self, sample: S) -> S | Rejection:
        rejection = self.reject(sample)
        return sample if rejection is None else rejection


def _path_text(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


@dataclass
class StepOutcome(Generic[S]):
    """One sample after the steps: as they left it, its ledger row if one dropped it, the parts taken out."""

    sample: S
    dropped: LedgerEntry | None = None
    removed: list[dict[str, str | None]] = field(default_factory=list)  # {id, url, reason, detail}


class Steps(Generic[S]):
    """An ordered list of steps, applied to one sample at a time."""

    def __init__(self, steps: Sequence[Step[S]]) -> None:
        """Raises UserError for something that is not a Step, a step without name or stage, a repeated name."""
        for step in steps:
            if not isinstance(step, Step):
                raise UserError(f"{step!r} is not a cleaning step (subclass curation.steps.Step or Filter)")
            if not step.name or not step.stage:
                raise UserError(f"step {type(step).__name__} must set `name` and `stage`")
        names = [step.name for step in steps]
        if len(set(names)) != len(names):
            raise UserError(f"two steps share a name ({', '.join(names)}); give each its own `name`")
        self.steps = tuple(steps)

    def fingerprint(self) -> list[dict[str, Any]]:
        return [step.fingerprint() for step in self.steps]

    def run(self, sample: S, partition: str) -> StepOutcome[S]:
        """Apply every step in order; the first rejection drops the sample under that step's stage."""
        outcome: StepOutcome[S] = StepOutcome(sample)
        for step in self.steps:
            result = step.apply(outcome.sample)
            if isinstance(result, Trimmed):
                outcome.removed += [
                    {"id": outcome.sample.id, "url": part.url, "reason": part.reason, "detail": part.detail} for part in result.removed
                ]
                outcome.sample, result = result.sample, result.rejection or result.sample
            if isinstance(result, Rejection):
                outcome.dropped = LedgerEntry.of(result, partition, step.stage, outcome.sample.id)
                return outcome
            outcome.sample = result
        return outcome
