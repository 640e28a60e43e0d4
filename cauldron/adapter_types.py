"""What an adapter is: a raw row of one source layout -> the images it shows and its (user, assistant) turns.

An `Adapter` picks the images and the fields a template family needs from one raw row and returns them;
calling it resolves the images to bytes (through the resolver the pipeline gives it) and builds the
Cauldron row. Fields are taken as typed: a required field that is missing or null refuses the row with
a reason (`missing_field`, `null_field`), never a stringified `None`.

Besides its conversion an adapter declares where its data lives in a source: `include` globs narrow the
files read (release layouts keep unrelated JSON next to the data), `url_columns` name the columns that
may hold only image URLs (fetched with `--fetch-images`), and `eval_ids` names the file that lists an
evaluation split's ids when the release mixes splits in its files (AI2D).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cauldron.image_refs import is_url
from cauldron.images import to_image_bytes
from cauldron.schema import TURN_KEYS, CauldronRow, Turn, is_cauldron_row, make_row
from cauldron.templates import Pair, row_rng
from curation.errors import SampleError

Converted = tuple[list[Any], list[Pair]]
Resolve = Callable[[Any], bytes]


@dataclass(frozen=True)
class EvalIds:
    """A list of evaluation ids shipped next to a release that mixes splits (one id per line)."""

    file_name: str  # looked up in the source root, e.g. `ai2d_test_ids.csv`
    url: str  # where to get it, for the error message
    key: Callable[[Mapping[str, Any]], str | None]  # a row's id in that list; None: the row cannot be told


@dataclass(frozen=True)
class Adapter:
    """Maps a raw row of one source layout onto Cauldron turns; `convert` returns (image values, pairs)."""

    name: str
    family: str
    convert: Callable[[Mapping[str, Any], random.Random], Converted] | None  # None: rows pass through
    include: tuple[str, ...] = ()  # globs of the files this adapter reads (empty: every data file)
    url_columns: tuple[str, ...] = ()  # columns whose values may be image URLs
    eval_ids: EvalIds | None = None

    def __call__(
        self,
        row: Mapping[str, Any],
        *,
        key: Any,
        seed: int = 0,
        source: str | None = None,
        resolve: Resolve = to_image_bytes,
    ) -> CauldronRow:
        """Convert one raw row. `key` identifies the row (e.g. its id) and seeds its randomness."""
        source = source or self.name
        try:
            if self.convert is None:
                return passthrough_row(row, resolve)
            images, pairs = self.convert(row, row_rng(seed, source, key))
            if not pairs:
                raise SampleError("no_turns")
            return make_row([resolve(image) for image in images], pairs, source)
        except SampleError:
            raise
        except (KeyError, IndexError) as error:
            raise SampleError("missing_field", repr(error)) from error
        except (ValueError, TypeError, AttributeError) as error:
            raise SampleError("bad_value", str(error)[:300]) from error

    def urls(self, row: Mapping[str, Any]) -> list[str]:
        """Image URLs a row names in the adapter's URL columns (what `--fetch-images` downloads)."""
        found: list[str] = []
        for column in self.url_columns:
            value = row.get(column)
            found.extend(item.strip() for item in (value if isinstance(value, list) else [value]) if is_url(item))
        return found


# ---- reading fields ---------------------------------------------------------------------------------


def passthrough_row(row: Mapping[str, Any], resolve: Resolve) -> CauldronRow:
    """A row already in the_cauldron's schema, its images resolved to bytes (`None` slots dropped)."""
    if not is_cauldron_row(row):
        raise SampleError("not_cauldron_schema")
    texts: list[Turn] = []
    for turn in row["texts"]:
        if any(not isinstance(turn[k], str) for k in TURN_KEYS):
            raise SampleError("null_field", "a turn has a null or non-text user/assistant/source")
        texts.append(Turn(user=turn["user"], assistant=turn["assistant"], source=turn["source"]))
    return {"images": [resolve(image) for image in row["images"] if image is not None], "texts": texts}


def required(row: Mapping[str, Any], name: str) -> Any:
    """`row[name]`, refusing the row when the field is absent or null."""
    if name not in row:
        raise SampleError("missing_field", name)
    value = row[name]
    if value is None:
        raise SampleError("null_field", name)
    return value


def text(row: Mapping[str, Any], name: str) -> str:
    """A required text field; numbers are accepted as their decimal text, anything else is refused."""
    value = required(row, name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SampleError("bad_value", f"{name} is a {type(value).__name__}, not text")
    value = str(value)
    if not value.strip():
        raise SampleError("empty_field", name)
    return value


def texts(row: Mapping[str, Any], name: str) -> list[str]:
    """A required list of texts; null entries are skipped, an empty result refuses the row."""
    value = required(row, name)
    items = value if isinstance(value, (list, tuple)) else [value]
    kept = [str(item) for item in items if isinstance(item, (str, int, float)) and not isinstance(item, bool) and str(item).strip()]
    if not kept:
        raise SampleError("no_answer", f"{name} holds no usable text")
    return kept


def strict_bool(value: Any) -> bool:
    """A label that says true or false in words (or a Python bool); an integer is ambiguous without names."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "yes", "no"}:
        return value.strip().lower() in {"true", "yes"}
    if isinstance(value, int):
        raise SampleError(
            "ambiguous_label", f"integer label {value} without ClassLabel names in the file's metadata; which class it is cannot be known"
        )
    raise SampleError("bad_value", f"not a boolean label: {value!r}")


def parse_bool(value: Any) -> bool:
    """A yes/no label for declarative mappings: words, bools, or 0/1 (a plain integer column)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    return strict_bool(value)


def parse_index(value: Any) -> int | str:
    """An answer index given as int or digit string; any other string is kept as the answer text."""
    if isinstance(value, bool):
        raise ValueError("boolean is not an answer index")
    if isinstance(value, int):
        return value
    if value is None:
        raise SampleError("null_field", "answer")
    stripped = str(value).strip()
    return int(stripped) if stripped.isdigit() else stripped


def first(value: Any) -> Any:
    """The first element of a list-valued field, or the value itself."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise SampleError("no_answer", "empty list")
        return value[0]
    return value


def image_of(row: Mapping[str, Any], *names: str) -> Any:
    """The first of the named image columns that holds a value (bytes, struct, path or URL)."""
    for name in names:
        value = row.get(name)
        if value is not None and value != "":
            return value
    raise SampleError("no_image", f"none of {', '.join(names)} holds an image")


def choices_list(value: Any, name: str) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise SampleError("bad_value", f"{name} is a {type(value).__name__}, not a list")
    if any(choice is None for choice in value):
        raise SampleError("null_field", f"a choice of {name} is null")
    return value
