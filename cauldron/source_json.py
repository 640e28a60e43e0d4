"""Records of JSON and JSON lines files, streamed: memory bounded by one record, damage reported, not raised.

- JSON lines: one record per non-blank line. A line that does not decode (malformed, not UTF-8, nested
  too deeply, longer than `MAX_RECORD_BYTES`) is reported as damaged and reading goes on at the next line.
- JSON array: its elements are decoded one at a time from a rolling buffer. A malformed element, or a
  file cut short, ends the array: everything from that point on is reported as one unreadable rest,
  since how many records it held cannot be known.
- JSON object: one document (up to `MAX_DOCUMENT_BYTES`). When exactly one of its values is a list of
  objects (`{"data": [...]}`, `{"questions": [...]}`), those are the records; when all of its values
  are objects (`{"<id>": {...}, ...}`), each value is a record; otherwise the object is one record.
  Several objects one after another (JSON lines saved as `.json`) are read as such.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

MAX_RECORD_BYTES = 64 * 2**20
MAX_DOCUMENT_BYTES = 1024 * 2**20
CHUNK_BYTES = 2**20
_WHITESPACE = " \t\r\n"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Damaged:
    """Records that could not be read: the one at `index`, or (with `rest`) every record from `index` on."""

    index: int
    rest: bool
    reason: str  # bad_json | truncated_file | record_too_large
    detail: str


def iter_json_lines(stream: io.BufferedIOBase | IO[bytes]) -> Iterator[Any | Damaged]:
    """Decoded values of a JSON lines stream, or `Damaged` for each line that does not decode."""
    index = 0
    while True:
        line = stream.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
            while (more := stream.readline(CHUNK_BYTES)) and not more.endswith(b"\n"):
                pass
            yield Damaged(index, False, "record_too_large", f"line longer than {MAX_RECORD_BYTES} bytes")
            index += 1
            continue
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except RecursionError:
            yield Damaged(index, False, "bad_json", "nested too deeply")
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            reason = "bad_json" if line.endswith(b"\n") else "truncated_file"  # only the last line lacks one
            yield Damaged(index, False, reason, f"record {index + 1}: {error}"[:300])
        index += 1


class _Buffer:
    """Decoded text of a byte stream, read on demand; `text[pos:]` is what has not been consumed."""

    def __init__(self, stream: io.BufferedIOBase | IO[bytes]) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.text = ""
        self.pos = 0
        self.eof = False

    def fill(self, at_least: int = CHUNK_BYTES) -> None:
        """Read at least `at_least` more bytes (or up to the end); raises UnicodeDecodeError on invalid UTF-8."""
        chunk = self.stream.read(max(at_least, CHUNK_BYTES))
        self.eof = not chunk
        self.text = self.text[self.pos :] + self.decoder.decode(chunk, final=self.eof)
        self.pos = 0

    def skip_whitespace(self) -> str | None:
        """The next non-blank character (not consumed), or None at the end of the stream."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.eof:
                return None
            self.fill()

    def decode_value(self, limit: int) -> Any:
        """Decode the value at `pos` (reading on as needed, up to `limit` characters of it) and consume it.

        Raises `_Stop` with a `Damaged`-style reason when it cannot.
        """
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except RecursionError:
                raise _Stop("bad_json", "nested too deeply") from None
            except json.JSONDecodeError as error:
                if self.eof:  # a document that does not end with its closing bracket was cut short
                    cut = not self.text.rstrip().endswith(("]", "}"))
                    raise _Stop("truncated_file" if cut else "bad_json", str(error)) from None
                if len(self.text) - self.pos > limit:
                    raise _Stop("record_too_large", f"a record longer than {limit} characters") from None
                self.fill(len(self.text) - self.pos)  # double what is buffered: linear time for long records
                continue
            if end == len(self.text) and not self.eof:  # a number may go on in the next chunk
                self.fill()
                continue
            self.pos = end
            return value


class _Stop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def iter_json(stream: io.BufferedIOBase | IO[bytes]) -> Iterator[Any | Damaged]:
    """Records of a JSON file (array, object, or concatenated objects), or `Damaged` for what cannot be read."""
    buffer = _Buffer(stream)
    index = 0
    try:
        first = buffer.skip_whitespace()
        if first is None:
            return
        if first == "[":
            buffer.pos += 1
            while (char := buffer.skip_whitespace()) != "]":
                if char is None:
                    raise _Stop("truncated_file", "the file ends inside its top-level array")
                if index:
                    if char != ",":
                        raise _Stop("bad_json", f"expected ',' or ']' after record {index}, found {char!r}")
                    buffer.pos += 1
                    buffer.skip_whitespace()
                yield buffer.decode_value(MAX_RECORD_BYTES)
                index += 1
            return
        document = buffer.decode_value(MAX_DOCUMENT_BYTES)
        if buffer.skip_whitespace() is None:
            yield from _document_records(document)
            return
        yield document  # JSON lines saved as .json: values one after another
        index = 1
        while buffer.skip_whitespace() is not None:
            yield buffer.decode_value(MAX_RECORD_BYTES)
            index += 1
    except _Stop as stop:
        yield Damaged(index, True, stop.reason, str(stop)[:300])
    except UnicodeDecodeError as error:
        yield Damaged(index, True, "bad_json", f"not UTF-8: {error}"[:300])


def _document_records(document: Any) -> Iterator[Any]:
    if isinstance(document, dict):
        lists = [
            value for value in document.values() if isinstance(value, list) and value and all(isinstance(item, dict) for item in value)
        ]
        if len(lists) == 1:
            yield from lists[0]
            return
        if len(document) > 1 and all(isinstance(value, dict) for value in document.values()):
            yield from document.values()
            return
    yield document
