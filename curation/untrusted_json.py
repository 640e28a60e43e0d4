"""JSON from untrusted inputs: every way it can be unusable is a ValueError.

Beyond invalid syntax and encodings, two shapes of valid JSON break a pipeline later: nesting deep
enough to exhaust the recursion limit, and `\\udXXX` escapes that decode to lone surrogates, which no
UTF-8 writer (shards, parquet, the ledger) accepts. Both are refused here, where the sample can still
be ledgered.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads(raw: bytes | str) -> Any:
    """`json.loads`, raising ValueError for deep nesting and lone surrogates as well."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    encoded = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _SURROGATE_ESCAPE.search(encoded):  # rare: only then pay for the check
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("JSON string holds a lone surrogate escape (not valid Unicode text)") from None
    return value
