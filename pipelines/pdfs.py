"""`curate pdfs`: PDF and OCR documents to page shards, one Ray task per input partition.

Each task renders its documents one by one in a bounded worker process (`curation.pdf.worker`), runs the
user's cleaning steps (`--step`, `curation.steps`) on each rendered page as it arrives (a task holds one page
of a document, not the document), writes one sample per page it keeps, and ledgers every failed document or
page and every page a step rejected. There is no score phase: a partition is finished when its manifest
carries the fingerprint of the current settings and of its input files (their names and identities: a shard or
PDF replaced under the same name is rendered again). Accounting is per unit: a selected page, or a whole
document that failed before its pages could be selected (or was never read: an unreadable file, the unreadable
rest of a damaged shard, a duplicate key). The partition's document count comes from the input itself (the
shard's tar listing, the files found); a partition whose processing does not account for every one of them
fails instead of being marked finished.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from curation.errors import SampleError, UserError
from curation.ledger import LedgerEntry, write_ledger
from curation.pdf.document import DocumentOpened
from curation.pdf.ocr import require_tesseract
from curation.pdf.pages import PageFailure, PageSample, failure_entry
from curation.pdf.settings import PdfSettings
from curation.pdf.sources import PdfPartition, SkippedDocument, count_documents, discover_partitions, iter_partition_items
from curation.pdf.worker import DocumentWorker
from curation.shards import PartitionShardWriter
from curation.steps import Step, Steps
from curation.storage import StoragePath
from pipelines.errors import PartitionAccountingError, PipelineError
from pipelines.partitioned import PartitionJob, fingerprint, keyed_by_inputs, write_partitions
from pipelines.report import RunReport, finish_report
from pipelines.runtime import ray_runtime


@dataclass(frozen=True)
class PdfsConfig:
    inputs: list[str]  # paths, URLs or glob patterns of either
    output: StoragePath
    settings: PdfSettings = field(default_factory=PdfSettings)
    pages_per_shard: int = 1000
    ray_address: str | None = None
    num_cpus: int | None = None
    steps: tuple[Step[PageSample], ...] = ()  # the user's cleaning steps, run on each rendered page


def write_pdf_partition(config: PdfsConfig, partition: PdfPartition, run_fingerprint: str) -> dict:
    started = time.perf_counter()
    listed = count_documents(partition, config.settings.max_doc_bytes)
    writer = PartitionShardWriter(config.output / "shards", partition.name, config.pages_per_shard)
    ledger: list[LedgerEntry] = []
    text_sources: Counter[str] = Counter()
    units = documents = 0
    steps = Steps(config.steps)
    with DocumentWorker(config.settings.memory_limit_mb) as worker:
        for item in iter_partition_items(partition, config.settings.max_doc_bytes):
            documents += 1
            if isinstance(item, SkippedDocument):
                ledger.append(LedgerEntry(item.id, partition.name, "read", item.reason, item.detail))
                units += 1
                continue
            for event in worker.stream(item, config.settings):  # one page in memory at a time
                if isinstance(event, DocumentOpened):
                    continue
                units += 1
                if isinstance(event, PageFailure):
                    ledger.append(failure_entry(item.doc_id, event, partition.name))
                    continue
                outcome = steps.run(event, partition.name)
                if outcome.dropped is not None:
                    ledger.append(outcome.dropped)
                    continue
                if outcome.removed:
                    raise UserError(f"a step removed parts of page {event.key}; steps of pages keep or reject a page whole")
                page = outcome.sample
                try:
                    writer.write(page.to_wds())
                except SampleError as exc:  # two document ids that make the same page key
                    ledger.append(LedgerEntry(page.key, partition.name, "write", exc.reason, exc.detail))
                    continue
                text_sources[page.text_source] += 1
    if documents != listed:
        raise PartitionAccountingError(f"{partition.name}: the input lists {listed} documents but {documents} were read")
    write_ledger(config.output / "ledger" / f"{partition.name}.parquet", ledger)
    return writer.close(
        input=units,
        documents=documents,
        text_sources=dict(text_sources),
        seconds=time.perf_counter() - started,
        fingerprint=run_fingerprint,
    )


def run_pdfs(config: PdfsConfig) -> dict:
    if config.settings.ocr == "tesseract":
        try:
            require_tesseract()
        except RuntimeError as exc:
            raise PipelineError(str(exc)) from None
    try:
        partitions = discover_partitions(config.inputs)
    except (FileNotFoundError, UserError) as exc:
        raise PipelineError(str(exc)) from None
    if not partitions:
        raise PipelineError(f"no PDFs or shards found in {', '.join(config.inputs)}")
    config.output.mkdir(parents=True, exist_ok=True)
    report = RunReport("pdfs", config.output, partitions=len(partitions))
    steps = Steps(config.steps).fingerprint()  # a bad step list is refused before any work
    run_key = fingerprint(asdict(config.settings), config.pages_per_shard, *([steps] if steps else []))
    inputs = {p.name: [p.shard] if p.shard is not None else list(p.files) for p in partitions}
    jobs = keyed_by_inputs([PartitionJob(p.name, run_key, (p,)) for p in partitions], inputs)
    with ray_runtime(config.ray_address, config.num_cpus):
        write_partitions(write_pdf_partition, jobs, config.output / "shards", report, shared=(config,), desc="render pages")
    manifests = report.manifests
    seconds = sum(m.get("seconds", 0.0) for m in manifests)
    pages = sum(m["count"] for m in manifests)
    report.extra = {
        "documents": sum(m.get("documents", 0) for m in manifests),
        "text_sources": dict(sum((Counter(m.get("text_sources", {})) for m in manifests), Counter())),
        "pages_per_task_second": pages / seconds if seconds else None,
    }
    return finish_report(report, scores=None, cutoff=None, score_name="")
