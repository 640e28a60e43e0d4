"""PDF page throughput: our PDFium renderer against poppler's `pdftoppm`, and `curate pdfs` end to end.

Same generated PDFs, same run, one core each:
  1. render at 144 DPI and write PPM files: ours (pypdfium2, exact pixel size) vs `pdftoppm -r 144`;
  2. the same with PNG output (`pdftoppm -png`), where PNG compression dominates both;
  3. end to end through the bounded worker (render at max side 980 to PNG + text layer + boxes), also
     in-process to show the isolation overhead, and on scanned pages with and without tesseract OCR.

    python benchmarks/pdf_render.py              # about 1.5 minutes on 2 busy cores
    python benchmarks/pdf_render.py --quick      # fewer pages, for a smoke run

The corpus mixes text pages (Helvetica prose), vector figure pages (matplotlib's PDF backend with its
embedded fonts) and scanned pages (full-page JPEG images).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pypdfium2 as pdfium  # noqa: E402

from curation.pdf.document import render_document  # noqa: E402
from curation.pdf.pages import SourceItem  # noqa: E402
from curation.pdf.render import PNG_COMPRESS_LEVEL, POINTS_PER_INCH, fit_size, render_pdf_page  # noqa: E402
from curation.pdf.settings import PdfSettings  # noqa: E402
from curation.pdf.worker import DocumentWorker  # noqa: E402
from examples.assets import english_paragraphs  # noqa: E402
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf, jpeg_bytes, text_image  # noqa: E402

DPI = 144


def _wrapped_lines(count: int, start: int, width: int = 95) -> list[str]:
    lines, current = [], ""
    for paragraph in english_paragraphs()[start:]:
        for word in paragraph.encode("latin-1", "replace").decode("latin-1").split():
            if current and len(current) + len(word) >= width:
                lines.append(current)
                current = ""
            current = f"{current} {word}".strip()
        if len(lines) >= count:
            return lines[:count]
    return lines


def text_pdf(pages: int) -> bytes:
    return build_pdf([SyntheticPage(lines=_wrapped_lines(55, 30 * i), font_size=9) for i in range(pages)])


def figure_pdf(pages: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        for page in range(pages):
            fig, axes = plt.subplots(2, 1, figsize=(8.5, 11))
            xs = [i / 100 for i in range(3000)]
            axes[0].plot(xs, [math.sin(x * (page + 1)) + 0.1 * math.cos(37 * x) for x in xs], linewidth=0.6)
            axes[0].set_title(f"Figure {page + 1}: a signal")
            axes[1].scatter(xs[::7], [math.cos(x) * x % 3 for x in xs[::7]], s=3)
            axes[1].set_xlabel("time (s)")
            fig.text(0.1, 0.02, " ".join(_wrapped_lines(1, page)), fontsize=7)
            pdf.savefig(fig)
            plt.close(fig)
    return buffer.getvalue()


def scanned_pdf(pages: int) -> bytes:
    out = []
    for page in range(pages):
        image = text_image(_wrapped_lines(30, 40 * page + 7, width=60), font_size=30).resize((1700, 2200))
        out.append(SyntheticPage(image=jpeg_bytes(image, quality=75), image_box=(0.0, 0.0, 612.0, 792.0)))
    return build_pdf(out)


def page_count(data: bytes) -> int:
    return len(pdfium.PdfDocument(data))


def ours_render(files: list[Path], out_dir: Path, png: bool) -> tuple[float, float]:
    """(wall, CPU) seconds to render every page at DPI and write it (PPM, or PNG), in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    for path in files:
        pdf = pdfium.PdfDocument(path)
        for index in range(len(pdf)):
            page = pdf[index]
            width, height = page.get_size()
            size = fit_size(width, height, DPI / POINTS_PER_INCH, 100_000)
            image = render_pdf_page(page, *size, "RGB")
            if png:
                image.save(out_dir / f"{path.stem}-{index}.png", compress_level=PNG_COMPRESS_LEVEL)
            else:
                image.save(out_dir / f"{path.stem}-{index}.ppm")
            page.close()
        pdf.close()
    return time.perf_counter() - wall, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pdftoppm_render(files: list[Path], out_dir: Path, png: bool) -> tuple[float, float]:
    """(wall, CPU) seconds for `pdftoppm -r DPI` over the same files (one process per file)."""
    binary = shutil.which("pdftoppm")
    assert binary is not None, "pdftoppm (poppler-utils) is not installed"
    wall, cpu = time.perf_counter(), _children_cpu()
    for path in files:
        command = [binary, "-r", str(DPI)] + (["-png"] if png else []) + [str(path), str(out_dir / path.stem)]
        subprocess.run(command, check=True)
    return time.perf_counter() - wall, _children_cpu() - cpu


def best_of(repeats: int, fn) -> tuple[float, float]:
    runs = [fn() for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def _process_cpu(pid: int) -> float:
    """CPU seconds of a live process and its reaped children (tesseract runs as the worker's child)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _worker_cpu(worker: DocumentWorker | None) -> float:
    """CPU seconds of the worker process so far (0 without a worker)."""
    if worker is None:
        return 0.0
    assert worker.pid is not None, "the worker has no process"
    return _process_cpu(worker.pid)


def end_to_end(items: list[SourceItem], settings: PdfSettings, worker: DocumentWorker | None) -> tuple[float, float, int]:
    """(wall, CPU, pages): CPU counts this process and, when used, the worker with its children."""
    wall, cpu = time.perf_counter(), time.process_time()
    worker_cpu = _worker_cpu(worker)
    pages = 0
    for source in items:
        result = worker.process(source, settings) if worker else render_document(source, settings)
        assert not result.failures, result.failures
        pages += len(result.pages)
    worker_cpu = _worker_cpu(worker) - worker_cpu
    return time.perf_counter() - wall, time.process_time() - cpu + worker_cpu, pages


def _row(label: str, pages: int, wall: float, cpu: float) -> str:
    return f"{label:<28} {pages / cpu:>10.1f} {pages / wall:>10.1f} {1000 * cpu / pages:>11.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few pages only")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("pdftoppm") is None:
        sys.exit("pdftoppm is missing: apt-get install poppler-utils")
    scale = 1 if args.quick else 3
    corpus = {
        "text": text_pdf(4 * scale),
        "figures": figure_pdf(2 * scale),
        "scans": scanned_pdf(2 * scale),
    }
    ocr_pages = scanned_pdf(2)  # OCR takes seconds per page: two are enough for a rate

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        files = []
        for name, data in corpus.items():
            files.append(tmp_dir / f"{name}.pdf")
            files[-1].write_bytes(data)
        counts = {name: page_count(data) for name, data in corpus.items()}
        total = sum(counts.values())
        print(f"corpus: {counts} = {total} pages; pypdfium2 {pdfium.version.PDFIUM_INFO}, one core per renderer")
        print(f"\n1-2. render at {DPI} DPI and write the files (best of {args.repeats})")
        print(f"{'':<28} {'pages/cpu-s':>10} {'pages/s':>10} {'cpu-ms/page':>11}")
        for png in (False, True):
            kind = "png" if png else "ppm"
            out_dir = tmp_dir / kind
            out_dir.mkdir()
            ours = best_of(args.repeats, partial(ours_render, files, out_dir, png))
            poppler = best_of(args.repeats, partial(pdftoppm_render, files, out_dir, png))
            print(_row(f"{kind}: pypdfium2 (ours)", total, *ours))
            print(_row(f"{kind}: pdftoppm -r {DPI}", total, *poppler))
            print(f"{kind}: ours / pdftoppm, per core: {poppler[1] / ours[1]:.2f}x")
            shutil.rmtree(out_dir)

    items = [SourceItem(name, name, "pdf", data, len(data)) for name, data in corpus.items()]
    scans = [SourceItem("scans_ocr", "scans_ocr", "pdf", ocr_pages, len(ocr_pages))]
    default = PdfSettings()
    print("\n3. end to end: max side 980, PNG, text + boxes")
    print(f"{'':<28} {'pages/cpu-s':>10} {'pages/s':>10} {'cpu-ms/page':>11}")
    with DocumentWorker() as worker:
        worker.process(items[0], default)  # start the worker outside the timings
        rows = [
            ("all pages, in-process", end_to_end(items, default, None)),
            ("all pages, worker", end_to_end(items, default, worker)),
            ("scans, worker, no OCR", end_to_end(scans, default, worker)),
        ]
        if shutil.which("tesseract"):
            rows.append(("scans, worker, tesseract", end_to_end(scans, PdfSettings(ocr="tesseract"), worker)))
        else:
            print("(tesseract missing: OCR row skipped)")
    for label, (wall, cpu, pages) in rows:
        print(_row(label, pages, wall, cpu))
    print("\npages/cpu-s is the per-core rate (CPU time of every process involved); pages/s is wall clock.")


if __name__ == "__main__":
    main()
