"""PDF and OCR documents to page samples (`curate pdfs`).

    sources   discover inputs (PDF files, PDFA / IDL / image+text shards) as partitions of SourceItems
    worker    DocumentWorker.stream(item, settings): page events as they are rendered, in a bounded worker
              process (process_document collects them into a DocumentResult)
    document  the same work in the calling process (what the worker runs)
    pages     the page sample format (PageSample.to_wds), failures and page selection
    settings  PdfSettings: size, mode, format, text sources, page selection, limits
    render, text, ocr   rasterisation, text layers and annotations, tesseract
    synthetic a small PDF writer for demos, tests and benchmarks

This package imports nothing on purpose: the worker process loads only what rendering needs.
"""
