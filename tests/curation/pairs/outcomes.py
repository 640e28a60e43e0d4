"""Narrowing a pair reader's `Pair | Rejection` results to the outcome a test expects."""

from __future__ import annotations

from curation.errors import Rejection
from curation.pairs.pair import Pair


def kept(result: Pair | Rejection) -> Pair:
    """The result, which must be a kept pair."""
    assert isinstance(result, Pair), result
    return result


def rejected(result: Pair | Rejection) -> Rejection:
    """The result, which must be a rejection."""
    assert isinstance(result, Rejection), result
    return result


def result_id(result: Pair | Rejection) -> str:
    """The id of a pair or of a rejection, which readers always set."""
    assert result.id is not None, result
    return result.id
