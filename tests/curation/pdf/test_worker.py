import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from curation.pdf.pages import SourceItem
from curation.pdf.settings import PdfSettings
from curation.pdf.worker import DocumentWorker, process_document
from tests.curation.pdf.conftest import require_tool
from tests.curation.pdf.docs import item, slow_page, text_lines
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf


def good_pdf(pages: int = 3) -> bytes:
    return build_pdf([SyntheticPage(lines=text_lines(i)) for i in range(pages)])


def reasons(result) -> list[tuple[int | None, str]]:
    return [(f.page, f.reason) for f in result.failures]


def assert_still_works(worker: DocumentWorker) -> None:
    result = worker.process(item(good_pdf(2), "after"), PdfSettings())
    assert not result.failures and [p.text for p in result.pages] == ["\n".join(text_lines(i)) for i in range(2)]


def test_worker_results_equal_in_process_results(worker):
    from curation.pdf.document import render_document

    source = item(good_pdf(), "same")
    isolated, local = worker.process(source, PdfSettings()), render_document(source, PdfSettings())
    assert isolated.page_count == local.page_count == 3
    assert [p.to_wds() for p in isolated.pages] == [p.to_wds() for p in local.pages]


def test_corrupt_encrypted_and_empty_documents_are_failures(worker, tmp_path):
    encrypted = build_pdf([SyntheticPage(lines=["secret text"])], user_password="hunter2")
    path = tmp_path / "locked.pdf"
    path.write_bytes(encrypted)
    pdftotext = require_tool("pdftotext")
    assert subprocess.run([pdftotext, str(path), "-"], capture_output=True).returncode != 0
    command = [pdftotext, "-upw", "hunter2", str(path), "-"]
    unlocked = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "secret text" in unlocked.stdout  # a real, valid encrypted PDF
    empty = (build_pdf([]), "zero_pages")  # PDFium sets no error code for it: checked after each kind
    cases = [
        ("empty", empty),
        ("garbage", (b"this is not a pdf", "corrupt_pdf")),
        ("empty_after_corrupt", empty),
        ("truncated", (good_pdf()[:300], "corrupt_pdf")),
        ("locked", (encrypted, "encrypted")),
        ("empty_after_locked", empty),
        ("empty_file", (b"", "corrupt_pdf")),
    ]
    assert_still_works(worker)
    starts = worker.starts
    for doc_id, (data, reason) in cases:
        result = worker.process(item(data, doc_id), PdfSettings())
        assert result.pages == [] and reasons(result) == [(None, reason)], doc_id
        assert result.ledger_entries("part")[0].id == doc_id
    assert worker.starts == starts  # none of these disturbed the worker
    assert_still_works(worker)


def test_a_page_over_the_time_limit_is_a_timeout_and_the_next_document_runs(worker):
    data = build_pdf([SyntheticPage(lines=["fast"]), slow_page(), SyntheticPage(lines=["never reached"])])
    assert_still_works(worker)
    starts = worker.starts
    result = worker.process(item(data, "slow"), PdfSettings(time_limit_s=2.0))
    assert [p.page_index for p in result.pages] == [0]
    assert reasons(result) == [(1, "timeout"), (2, "timeout")]
    assert "stopped at page 1" in result.failures[1].detail
    assert [e.id for e in result.ledger_entries("part")] == ["slow_p00001", "slow_p00002"]
    assert_still_works(worker)
    assert worker.starts == starts + 1  # the hung process was replaced


def test_a_render_over_the_memory_limit_is_memory_limit(worker):
    result = worker.process(item(good_pdf(1), "huge"), PdfSettings(max_side=40000, memory_limit_mb=512))
    assert reasons(result) == [(0, "memory_limit")]
    assert_still_works(worker)


def test_a_crashed_worker_is_reported_and_replaced():
    data = build_pdf([SyntheticPage(lines=["first"]), slow_page(), SyntheticPage(lines=["third"])])
    with DocumentWorker() as own:
        own.process(item(good_pdf(1)), PdfSettings())  # started
        killer = threading.Timer(0.5, os.kill, (own.pid, signal.SIGKILL))
        killer.start()
        result = own.process(item(data, "killed"), PdfSettings(time_limit_s=60))
        killer.join()
        assert reasons(result) == [(1, "worker_crashed"), (2, "worker_crashed")]
        assert "SIGKILL" in result.failures[0].detail
        assert_still_works(own)
        assert own.starts == 2


def test_size_caps_and_page_selection(worker):
    data = good_pdf(6)
    assert reasons(worker.process(item(data), PdfSettings(max_doc_bytes=len(data) - 1))) == [(None, "too_large")]
    assert reasons(worker.process(item(data), PdfSettings(max_doc_pages=5))) == [(None, "too_large")]
    first = worker.process(item(data), PdfSettings(page_selection="first", num_pages=2))
    assert [p.page_index for p in first.pages] == [0, 1] and first.page_count == 6
    picks = []
    for doc_id, seed in [("a", 0), ("a", 0), ("b", 0), ("a", 1)]:
        settings = PdfSettings(page_selection="random", num_pages=3, seed=seed)
        picks.append([p.page_index for p in worker.process(item(data, doc_id), settings).pages])
    assert picks[0] == picks[1] and len(set(picks[0])) == 3 and picks[0] == sorted(picks[0])
    assert len({tuple(p) for p in picks}) > 1  # the sample depends on the document and the seed
    assert len(worker.process(item(data), PdfSettings(page_selection="random", num_pages=50)).pages) == 6


def test_oversized_files_are_not_read_and_module_level_api(tmp_path):
    from curation.pdf.sources import file_item

    path = tmp_path / "big.pdf"
    path.write_bytes(good_pdf(1))
    source = file_item(path, tmp_path, max_doc_bytes=10)
    assert isinstance(source, SourceItem)
    assert source.data == b"" and source.size == path.stat().st_size
    assert reasons(process_document(source, PdfSettings(max_doc_bytes=10))) == [(None, "too_large")]
    fine = process_document(SourceItem("big", str(path), "pdf", path.read_bytes(), path.stat().st_size), PdfSettings())
    assert len(fine.pages) == 1


@pytest.mark.parametrize("bad", [{"mode": "CMYK"}, {"max_side": 0}, {"min_side": 2000}, {"page_selection": "odd"}])
def test_invalid_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        PdfSettings(**bad)


def test_a_forked_process_starts_its_own_worker(worker):
    assert_still_works(worker)
    parent_worker = worker.pid
    child = os.fork()
    if child == 0:  # a forked child (as some process pools do) must not talk to the parent's worker
        ok = False
        try:
            result = worker.process(item(good_pdf(1), "in_child"), PdfSettings())
            ok = not result.failures and worker.pid != parent_worker
        finally:
            worker.close()
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert worker.pid == parent_worker
    assert_still_works(worker)


def test_stream_yields_pages_as_they_come_and_a_closed_stream_stops_the_worker(worker):
    from curation.pdf.document import DocumentOpened

    data = build_pdf([SyntheticPage(lines=["first"]), slow_page(), SyntheticPage(lines=["third"])])
    assert_still_works(worker)
    starts, pid = worker.starts, worker.pid
    events = worker.stream(item(data, "streamed"), PdfSettings(time_limit_s=60))
    opened, first = next(events), next(events)  # before the slow page is drawn
    assert isinstance(opened, DocumentOpened) and opened.selected == [0, 1, 2] and first.text == "first"
    events.close()  # mid-document: the worker is stopped, not left with a half-read reply
    assert worker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert_still_works(worker)
    assert worker.starts == starts + 1


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie nobody reaps yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


PARENT = """
import sys
from curation.pdf.settings import PdfSettings
from curation.pdf.worker import DocumentWorker
from tests.curation.pdf.docs import item, slow_page
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf

slow = item(build_pdf([slow_page(400_000)]), "slow")  # about 40 s to draw
with DocumentWorker() as worker:
    worker.process(item(build_pdf([SyntheticPage(lines=["warm"])])), PdfSettings())
    print(worker.pid, flush=True)
    worker.process(slow, PdfSettings(time_limit_s=600))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_worker_whose_parent_is_killed_exits_in_the_middle_of_a_page():
    root = Path(__file__).resolve().parents[3]
    env = os.environ | {"PYTHONPATH": str(root)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.0)  # the worker is drawing the slow page, which takes far longer than this test
        assert not _gone(child)
        parent.kill()  # as Ray kills a task's process: no cleanup runs in it
        parent.wait()
        deadline = time.monotonic() + 5.0
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child), "the orphaned worker is still drawing a page nobody will read"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_document_over_its_time_budget_is_a_timeout_though_each_page_is_in_time(worker):
    pages = [SyntheticPage(lines=["fast"]), slow_page(400_000), SyntheticPage(lines=["cheap"])]
    settings = PdfSettings(time_limit_s=60, doc_time_limit_s=1.0)  # the slow page takes ~40 s, under 60
    result = worker.process(item(build_pdf(pages), "long"), settings)
    assert [p.page_index for p in result.pages] == [0]
    assert reasons(result) == [(1, "timeout"), (2, "timeout")]
    assert "over 1 s in all" in result.failures[0].detail
    assert_still_works(worker)


def test_the_worker_runs_in_a_process_with_descriptors_past_1023():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1030:  # the worker's pipes come after these
            held.append(os.open(os.devnull, os.O_RDONLY))
        with DocumentWorker() as own:
            assert_still_works(own)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


FAKE_TESSERACT = """#!/bin/sh
[ "$1" = "--version" ] && { echo "tesseract 5.3.0"; exit 0; }
echo $$ > "{pid_file}"
exec sleep 60
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_timeout_during_ocr_stops_tesseract_and_removes_its_files(tmp_path, monkeypatch):
    from tests.curation.pdf.docs import PANGRAM
    from tests.fixtures.pdf_writer import scanned_page

    pid_file = tmp_path / "tesseract.pid"
    fake = tmp_path / "bin" / "tesseract"
    fake.parent.mkdir()
    fake.write_text(FAKE_TESSERACT.replace("{pid_file}", str(pid_file)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with DocumentWorker() as own:
        own.process(item(good_pdf(1)), PdfSettings())  # started
        assert own._running is not None
        worker_tmp = Path(own._running.tmp)
        assert worker_tmp.is_dir()
        result = own.process(item(build_pdf([scanned_page(PANGRAM)]), "scan"), PdfSettings(ocr="tesseract", time_limit_s=2))
        assert reasons(result) == [(0, "timeout")]
        tesseract = int(pid_file.read_text())
        deadline = time.monotonic() + 5.0
        while not _gone(tesseract) and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            assert _gone(tesseract), "tesseract outlived the worker that started it"
        finally:
            if not _gone(tesseract):
                os.kill(tesseract, signal.SIGKILL)
        assert not worker_tmp.exists()  # tesseract's image and output files went with the worker
