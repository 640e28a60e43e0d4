"""Documents processed in a separate, bounded worker process: `process_document(item, settings)`.

PDFium is not thread-safe and a malformed PDF can hang or crash it, so documents are rendered in a
long-lived child process (`python -m curation.pdf.worker`), one at a time. The child caps its own
address space (RLIMIT_AS), exits when its parent is gone (a task killed with kill -9), and reports each
step (document opened, each page) as it finishes; the parent allows `time_limit_s` per step and
`doc_time_limit_s` per document. On a timeout the child is killed; on a crash it is reaped; either way
the document gets failures (`timeout` / `worker_crashed`) naming the page it stopped at, and the next
document starts a fresh child. Nothing here raises for a bad document.

Protocol on the child's stdin/stdout (stdout is moved to stderr for everything else): frames of an
8-byte big-endian length and a payload. A request is a JSON header, the document bytes and the OCR
JSON bytes. Replies are JSON headers, a page header being followed by its image bytes. No pickle.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from curation.errors import Rejection
from curation.pdf.document import DocumentEvent, DocumentOpened, collect_events, iter_document
from curation.pdf.pages import DocumentResult, PageFailure, PageSample, SourceItem
from curation.pdf.settings import PdfSettings
from curation.pdf.text import Span

_LENGTH = struct.Struct(">Q")
_READ_CHUNK = 1 << 20
DEFAULT_STARTUP_TIMEOUT_S = 120.0


class WorkerStartError(RuntimeError):
    """The worker process could not be started (an installation problem, not a document problem)."""


# ---- framing -------------------------------------------------------------------------------------


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_frame(fd: int, payload: bytes) -> None:
    _write_all(fd, _LENGTH.pack(len(payload)))
    _write_all(fd, payload)


class FrameReader:
    """Reads frames from a pipe; `deadline` (a time.monotonic value) bounds the wait for each frame.

    Waits with poll, not select: select refuses descriptors past 1023, which a task process with many
    files and sockets open hands out."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = bytearray()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def _fill(self, size: int, deadline: float | None) -> None:
        while len(self.buffer) < size:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._poll.poll(math.ceil(remaining * 1000)):
                    raise TimeoutError
            chunk = os.read(self.fd, max(_READ_CHUNK, size - len(self.buffer)))
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def read(self, deadline: float | None = None) -> bytes:
        self._fill(_LENGTH.size, deadline)
        (length,) = _LENGTH.unpack(self.buffer[: _LENGTH.size])
        self._fill(_LENGTH.size + length, deadline)
        payload = bytes(self.buffer[_LENGTH.size : _LENGTH.size + length])
        del self.buffer[: _LENGTH.size + length]
        return payload


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _spans_out(spans: list[Span]) -> list[list[Any]]:
    return [[s.text, list(s.box)] for s in spans]


def _spans_in(rows: list[list[Any]]) -> list[Span]:
    return [Span(text, tuple(box)) for text, box in rows]


def page_header(sample: PageSample) -> dict[str, Any]:
    fields = {k: v for k, v in vars(sample).items() if k not in ("image", "lines", "words")}
    return {"type": "page", **fields, "lines": _spans_out(sample.lines), "words": _spans_out(sample.words)}


def page_from_header(header: dict[str, Any], image: bytes) -> PageSample:
    fields = {k: v for k, v in header.items() if k not in ("type", "lines", "words")}
    return PageSample(**fields, image=image, lines=_spans_in(header["lines"]), words=_spans_in(header["words"]))


# ---- the child -----------------------------------------------------------------------------------


def _limit_address_space(limit_mb: int) -> None:
    limit = limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


PARENT_CHECK_S = 0.5


def _exit_with_parent(parent: int, tmp: str) -> None:
    """End this process as soon as `parent` is gone, even in the middle of a page.

    A task killed with SIGKILL (Ray's way) runs no cleanup; its worker would go on drawing a page that
    nobody will read, for ever when the page hangs PDFium, holding a core and up to its memory limit.
    A thread polls the parent's pid: PDFium releases the GIL while it draws.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        shutil.rmtree(tmp, ignore_errors=True)  # this worker's own TMPDIR, made for it by the parent
        if os.getpgid(0) == os.getpid():  # its own process group, as DocumentWorker starts it
            os.killpg(0, signal.SIGKILL)  # with any tesseract it runs
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _serve(memory_limit_mb: int, parent: int, tmp: str) -> None:
    _exit_with_parent(parent, tmp)
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    _limit_address_space(memory_limit_mb)

    reader = FrameReader(requests)
    write_frame(replies, _json({"type": "ready"}))
    while True:
        try:
            header = json.loads(reader.read())
            data = reader.read()
            annotation = reader.read() if header["has_annotation"] else None
        except EOFError:
            return
        item = SourceItem(
            header["doc_id"],
            header["source"],
            header["kind"],
            data,
            header["size"],
            annotation,
            header["transcription"],
        )
        for event in iter_document(item, PdfSettings.from_dict(header["settings"])):
            if isinstance(event, DocumentOpened):
                opened = {"type": "opened", "page_count": event.page_count, "selected": event.selected}
                write_frame(replies, _json(opened))
            elif isinstance(event, PageSample):
                write_frame(replies, _json(page_header(event)))
                write_frame(replies, event.image)
            else:
                write_frame(replies, _json({"type": "failure", **event.message()}))
        write_frame(replies, _json({"type": "done"}))


# ---- the parent ----------------------------------------------------------------------------------


def _kill_group(pid: int) -> None:
    """SIGKILL the worker's process group: the worker and any tesseract it started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # gone already (a crash)
        pass


def _worker_env(tmp: str) -> dict[str, str]:
    env = dict(os.environ, TMPDIR=tmp)
    env.setdefault("OMP_THREAD_LIMIT", "1")  # tesseract: one thread per worker
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


@dataclass
class _Running:
    """A started worker process, its pipes, and the frame reader on its output."""

    proc: subprocess.Popen[bytes]
    stdin: IO[bytes]
    stdout: IO[bytes]
    reader: FrameReader
    tmp: str  # the worker's TMPDIR (tesseract's image and output files), removed with the worker


class DocumentWorker:
    """A reusable worker process; replaced after a timeout or a crash. Safe to share between threads."""

    def __init__(
        self,
        memory_limit_mb: int = PdfSettings.memory_limit_mb,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    ):
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout_s = startup_timeout_s
        self.starts = 0
        self._running: _Running | None = None
        self._owner = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> DocumentWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._running.proc.pid if self._running else None

    def _start(self) -> _Running:
        command = [sys.executable, "-m", "curation.pdf.worker", "--memory-limit-mb", str(self.memory_limit_mb)]
        tmp = tempfile.mkdtemp(prefix="pdf-worker-")
        command += ["--parent-pid", str(os.getpid()), "--tmp-dir", tmp]
        # its own process group: stopping the worker also stops the tesseract it may be running
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_env(tmp), close_fds=True, start_new_session=True
        )
        if proc.stdin is None or proc.stdout is None:  # both are pipes, by the arguments above
            raise RuntimeError("the PDF worker process has no stdin/stdout pipe")
        running = self._running = _Running(proc, proc.stdin, proc.stdout, FrameReader(proc.stdout.fileno()), tmp)
        self.starts += 1
        try:
            ready = json.loads(running.reader.read(time.monotonic() + self.startup_timeout_s))
        except (TimeoutError, EOFError):
            self._stop(kill=True)
            raise WorkerStartError("the PDF worker process did not start (see its stderr)") from None
        if ready.get("type") != "ready":
            self._stop(kill=True)
            raise WorkerStartError(f"unexpected first message from the PDF worker: {ready}")
        return running

    def _stop(self, kill: bool) -> int | None:
        running, self._running = self._running, None
        if running is None:
            return None
        proc = running.proc
        if kill:
            _kill_group(proc.pid)
        else:
            running.stdin.close()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            code = proc.wait()
        for stream in (running.stdin, running.stdout):
            if not stream.closed:
                stream.close()
        shutil.rmtree(running.tmp, ignore_errors=True)
        return code

    def _forget_if_forked(self) -> None:
        """After a fork the worker process belongs to the parent: leave it alone, start our own."""
        if self._owner != os.getpid():
            self._running, self._owner = None, os.getpid()

    def close(self) -> None:
        with self._lock:
            self._forget_if_forked()
            self._stop(kill=False)

    def process(self, item: SourceItem, settings: PdfSettings) -> DocumentResult:
        """Render one document in the worker; every problem becomes a failure in the result (which holds
        every page: for untrusted documents of many pages, consume `stream` instead)."""
        return collect_events(item.doc_id, self.stream(item, settings))

    def stream(self, item: SourceItem, settings: PdfSettings) -> Iterator[DocumentEvent]:
        """Render one document in the worker, yielding each event as the worker reports it: DocumentOpened,
        then a PageSample or PageFailure per selected page, or a single document failure.

        The caller holds one page at a time, however many pages the document has. Closing the iterator
        before its end (or an error in the caller between pages) stops the worker process, which is then
        mid-document; the next document starts a fresh one.
        """
        if item.size > settings.max_doc_bytes:
            detail = f"{item.size} bytes, over the {settings.max_doc_bytes} byte cap"
            yield PageFailure(None, Rejection("too_large", detail))
            return
        with self._lock:
            self._forget_if_forked()
            if self._running is not None and self.memory_limit_mb != settings.memory_limit_mb:
                self._stop(kill=False)
            self.memory_limit_mb = settings.memory_limit_mb
            running = self._running or self._start()
            finished = False
            try:
                yield from self._exchange(running, item, settings)
                finished = True
            finally:
                if not finished:
                    self._stop(kill=True)

    def _send(self, running: _Running, item: SourceItem, settings: PdfSettings) -> None:
        header = {
            "doc_id": item.doc_id,
            "source": item.source,
            "kind": item.kind,
            "size": item.size,
            "transcription": item.transcription,
            "has_annotation": item.annotation is not None,
            "settings": settings.to_dict(),
        }
        fd = running.stdin.fileno()
        write_frame(fd, _json(header))
        write_frame(fd, item.data)
        if item.annotation is not None:
            write_frame(fd, item.annotation)

    def _exchange(self, running: _Running, item: SourceItem, settings: PdfSettings) -> Iterator[DocumentEvent]:
        pending: list[int] | None = None  # selected pages not yet reported; None until the document opens
        clock = _DocumentClock(settings)
        try:
            self._send(running, item, settings)
            while True:
                message = json.loads(clock.read(running.reader))
                kind = message["type"]
                if kind == "done":
                    return
                if kind == "opened":
                    pending = list(message["selected"])
                    yield DocumentOpened(message["page_count"], list(message["selected"]))
                elif kind == "page":
                    image = clock.read(running.reader)
                    page = page_from_header(message, image)
                    _opened(pending).remove(page.page_index)
                    yield page
                elif kind == "failure":
                    if message["page"] is not None:
                        _opened(pending).remove(message["page"])
                    yield PageFailure(message["page"], Rejection(message["reason"], message["detail"]))
        except TimeoutError:
            self._stop(kill=True)
            reason, what = "timeout", clock.overrun()
        except (EOFError, BrokenPipeError):
            code = self._stop(kill=True)
            reason, what = "worker_crashed", f"worker exited with {_describe_exit(code)}"
        if pending is None:
            yield PageFailure(None, Rejection(reason, f"{what} while opening the document"))
            return
        for position, page_index in enumerate(pending):
            detail = what if position == 0 else f"not rendered: the worker stopped at page {pending[0]} ({what})"
            yield PageFailure(page_index, Rejection(reason, detail))


class _DocumentClock:
    """The worker's time on one document: `time_limit_s` per step, `doc_time_limit_s` in all. Only time
    spent waiting for the worker counts, not the caller's own work between pages."""

    def __init__(self, settings: PdfSettings):
        self.step = settings.time_limit_s
        self.total = settings.doc_time_limit_s
        self.left = self.total
        self.last_wait = self.step

    def read(self, reader: FrameReader) -> bytes:
        """The next frame, or TimeoutError when the step or the document is over its limit."""
        self.last_wait = min(self.step, self.left)
        started = time.monotonic()
        try:
            return reader.read(started + self.last_wait)
        finally:
            self.left -= time.monotonic() - started

    def overrun(self) -> str:
        """What the timeout was, for the ledger."""
        if self.last_wait < self.step:
            return f"the document took over {self.total:g} s in all"
        return f"no progress within {self.step:g} s"


def _opened(pending: list[int] | None) -> list[int]:
    """The pages still due, which exist once the worker has reported the document open."""
    if pending is None:
        raise RuntimeError("the PDF worker reported a page before opening the document")
    return pending


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


_shared_worker: DocumentWorker | None = None
_shared_lock = threading.Lock()


def shared_worker() -> DocumentWorker:
    """This process's default worker, started on first use and stopped at exit."""
    global _shared_worker
    with _shared_lock:
        if _shared_worker is None:
            _shared_worker = DocumentWorker()
            atexit.register(_shared_worker.close)
        return _shared_worker


def process_document(item: SourceItem, settings: PdfSettings, worker: DocumentWorker | None = None) -> DocumentResult:
    """Turn one document into page samples and failures, in a bounded worker process (never raises for
    a bad document; WorkerStartError if no worker process can be started at all)."""
    return (worker or shared_worker()).process(item, settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PDF worker process (started by curation.pdf.worker).")
    parser.add_argument("--memory-limit-mb", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True, help="exit when this process is gone")
    parser.add_argument("--tmp-dir", required=True, help="this worker's TMPDIR, removed when the parent is gone")
    args = parser.parse_args(argv)
    _serve(args.memory_limit_mb, args.parent_pid, args.tmp_dir)


if __name__ == "__main__":
    main()
