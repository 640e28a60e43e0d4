"""The `curate` command line: one subcommand per pipeline, each with --help, one-line errors on bad input."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from curation.errors import UserError
from curation.models import ModelUnavailableError
from curation.obelics import CleaningSettings
from curation.perplexity import DEFAULT_PPL_MODEL, PerplexityConfig
from curation.spawning import DEFAULT_ENDPOINT, TOKEN_VARIABLES, SpawningConfig
from curation.storage import StoragePath, storage_path
from pipelines.errors import PipelineError

Handler = Callable[[argparse.Namespace], dict]


class OneLineErrorParser(argparse.ArgumentParser):
    """Argument errors as one line (the full usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _location(text: str) -> StoragePath:
    """A local path or an object-store URL (s3://, gs://, hf://, file://); see curation.storage."""
    try:
        return storage_path(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jpeg_spelling(wanted: str):
    """An --image-format type that takes both `jpg` and `jpeg` and gives the command's own spelling."""

    def parse(text: str) -> str:
        return wanted if text.lower() in ("jpg", "jpeg") else text.lower()

    return parse


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument(
        "--ray-address",
        help="GCS address host:port of a running Ray cluster (default: start Ray "
        "locally); joining gives up after $POTION_RAY_CONNECT_TIMEOUT_S seconds (default 60)",
    )
    group.add_argument("--num-cpus", type=_positive_int, help="CPUs for a local Ray (default: all)")


def add_step_arguments(parser: argparse.ArgumentParser, sample: str) -> None:
    group = parser.add_argument_group("your own cleaning steps (after the built-in ones; see README)")
    group.add_argument("--steps-file", type=Path, help="YAML list of {step: module:Class, args: {...}}, run in its order")
    group.add_argument(
        "--step",
        action="append",
        default=[],
        metavar="MODULE:CLASS[:JSON]",
        help=f"a curation.steps.Step subclass run on every {sample}, with keyword arguments as a JSON "
        "object; repeat for more (after those of --steps-file)",
    )


def _steps(args: argparse.Namespace) -> tuple:
    from curation.step_loading import load_steps_file, parse_step

    loaded = load_steps_file(args.steps_file) if args.steps_file else []
    return tuple(loaded + [parse_step(text) for text in args.step])


def _add_obelics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "obelics",
        help="opt-out removal + perplexity pruning of OBELICS documents",
        description="Remove opted-out images (do-not-train lists, Spawning API), drop the documents with the "
        "highest perplexity, and write WebDataset shards, a ledger and a report.",
    )
    p.add_argument(
        "--input",
        type=_location,
        nargs="+",
        required=True,
        help="parquet/arrow files or folders of them (OBELICS schema); local paths or s3://, gs://, hf:// URLs",
    )
    p.add_argument(
        "--output",
        type=_location,
        required=True,
        help="output folder, local or an object-store URL (shards/, ledger/, scores/, report.json)",
    )
    sel = p.add_argument_group("perplexity")
    sel.add_argument(
        "--drop-top-ppl", type=_fraction, default=0.05, help="drop this fraction of documents with the highest perplexity (default 0.05)"
    )
    sel.add_argument("--max-ppl", type=float, help="also drop documents with perplexity above this value")
    sel.add_argument("--ppl-model", default=DEFAULT_PPL_MODEL, help=f"causal LM hub id or local folder (default {DEFAULT_PPL_MODEL})")
    sel.add_argument("--ppl-max-length", type=_positive_int, help="tokens per window (default: model context, at most 2048)")
    sel.add_argument(
        "--ppl-long-docs",
        choices=("windows", "truncate"),
        default="windows",
        help="score all windows of a long document, or only the first",
    )
    sel.add_argument("--ppl-batch-tokens", type=_positive_int, default=8192, help="padded tokens per forward batch (default 8192)")
    sel.add_argument(
        "--ppl-dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto", help="auto: bf16 on GPU, fp32 on CPU"
    )
    sel.add_argument("--ppl-actors", type=_positive_int, help="perplexity actors (default: one per GPU, else one)")
    sel.add_argument("--ppl-cpus-per-actor", type=float, help="CPUs per CPU actor (default: all but one)")
    opt = p.add_argument_group("opt-out")
    opt.add_argument(
        "--do-not-train",
        type=_location,
        nargs="*",
        default=[],
        help="do-not-train lists: .txt (URLs and domains) or .parquet (url/domain columns)",
    )
    opt.add_argument("--spawning", action="store_true", help="also query the Spawning opt-out API")
    opt.add_argument("--spawning-endpoint", default=DEFAULT_ENDPOINT, help="Spawning API endpoint")
    opt.add_argument("--spawning-token-env", help=f"environment variable holding the API token (default: {' or '.join(TOKEN_VARIABLES)})")
    opt.add_argument("--spawning-batch-size", type=int, default=1000, help="URLs per request, 2..10000 (default 1000)")
    opt.add_argument("--spawning-concurrency", type=_positive_int, default=10, help="requests in flight (default 10)")
    opt.add_argument("--spawning-rps", type=float, default=20.0, help="requests per second (default 20)")
    opt.add_argument(
        "--optout-cache",
        type=_location,
        help="URL verdict cache, a local SQLite file (default <output>/optout_cache.sqlite; required when --output is a URL)",
    )
    opt.add_argument("--recheck-after-days", type=float, help="re-query cached URLs older than this")
    opt.add_argument(
        "--on-unchecked",
        choices=("fail", "drop"),
        default="fail",
        help="URLs the API could not answer: fail the run, or ledger their documents as opt_out_unchecked",
    )
    img = p.add_argument_group("images")
    img.add_argument(
        "--images",
        choices=("download", "keep-urls"),
        default="download",
        help="download the kept documents' image URLs into the shards (default), or keep them as URLs for a separate fetch",
    )
    img.add_argument(
        "--max-side", type=_positive_int, default=980, help="resize downloaded images so the longest side is at most this (default 980)"
    )
    img.add_argument(
        "--min-images",
        type=int,
        default=1,
        help="ledger documents left with fewer images than this after the download as no_images_left (default 1)",
    )
    img.add_argument("--download-processes", type=_positive_int, default=1, help="download processes per partition task (default 1)")
    img.add_argument("--download-threads", type=_positive_int, default=16, help="download threads per process (default 16)")
    img.add_argument("--allow-private-networks", action="store_true", help="allow image URLs on loopback/private addresses (local mirrors)")
    lang = p.add_argument_group("language id")
    lang.add_argument("--lid-model", type=Path, help="fastText lid.176 model; enables language filtering")
    lang.add_argument("--min-lang-prob", type=float, default=0.8, help="minimum English probability with --lid-model (default 0.8)")
    out = p.add_argument_group("output")
    out.add_argument(
        "--samples-per-shard",
        "--docs-per-shard",
        dest="docs_per_shard",
        type=_positive_int,
        default=1000,
        help="documents per WebDataset shard (default 1000)",
    )
    out.add_argument("--parquet", action="store_true", help="also write the survivors as OBELICS-schema parquet")
    add_step_arguments(p, "document")
    out.add_argument(
        "--no-keep-cleaned",
        dest="keep_cleaned",
        action="store_false",
        help="do not keep each cleaned partition on disk between the score and write phases "
        "(no second copy of the data; the write phase cleans each partition again)",
    )
    add_ray_arguments(p)
    p.set_defaults(handler=_run_obelics)


def _spawning(args: argparse.Namespace) -> SpawningConfig | None:
    """The Spawning API settings, its token read from the environment; None without --spawning."""
    if not args.spawning:
        return None
    variables = [args.spawning_token_env] if args.spawning_token_env else list(TOKEN_VARIABLES)
    token = next((os.environ[v] for v in variables if os.environ.get(v)), None)
    if token is None:
        raise PipelineError(
            f"--spawning needs an API token in ${' or $'.join(variables)} (or name another variable with --spawning-token-env)"
        )
    return SpawningConfig(
        endpoint=args.spawning_endpoint,
        token=token,
        batch_size=args.spawning_batch_size,
        max_concurrency=args.spawning_concurrency,
        requests_per_second=args.spawning_rps,
    )


def _run_obelics(args: argparse.Namespace) -> dict:
    from curation.pairs.download import DownloadOptions
    from pipelines.obelics import ObelicsConfig, run_obelics

    config = ObelicsConfig(
        inputs=args.input,
        output=args.output,
        ppl=PerplexityConfig(
            model=args.ppl_model,
            max_length=args.ppl_max_length,
            long_docs=args.ppl_long_docs,
            batch_tokens=args.ppl_batch_tokens,
            dtype=args.ppl_dtype,
        ),
        drop_top_ppl=args.drop_top_ppl or None,
        max_ppl=args.max_ppl,
        do_not_train=args.do_not_train,
        spawning=_spawning(args),
        optout_cache=args.optout_cache,
        recheck_after_days=args.recheck_after_days,
        cleaning=CleaningSettings(
            min_lang_prob=args.min_lang_prob if args.lid_model else 0.0,
            on_unchecked=args.on_unchecked,
        ),
        lid_model=args.lid_model,
        docs_per_shard=args.docs_per_shard,
        parquet_output=args.parquet,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        ppl_actors=args.ppl_actors,
        ppl_cpus_per_actor=args.ppl_cpus_per_actor,
        images=args.images,
        download=DownloadOptions(
            max_side=args.max_side,
            processes=args.download_processes,
            threads=args.download_threads,
            allow_private_networks=args.allow_private_networks,
        ),
        min_images=args.min_images,
        steps=_steps(args),
        keep_cleaned=args.keep_cleaned,
    )
    return run_obelics(config)


def _add_pdfs(sub: argparse._SubParsersAction) -> None:
    from curation.pdf.settings import (
        IMAGE_FORMATS,
        MODES,
        OCR_ENGINES,
        PAGE_SELECTIONS,
        PdfSettings,
    )

    d = PdfSettings()
    p = sub.add_parser(
        "pdfs",
        help="PDF / OCR documents to page shards",
        description="Render PDF pages (loose PDFs, PDFA/IDL shards, image+text shards) with their text and boxes "
        "into WebDataset page shards; every failed document or page is ledgered.",
    )
    p.add_argument("--input", nargs="+", required=True, help="PDF files, folders, globs, or WebDataset shards; local or object-store URLs")
    p.add_argument(
        "--output", type=_location, required=True, help="output folder, local or an object-store URL (shards/, ledger/, report.json)"
    )
    r = p.add_argument_group("rendering")
    r.add_argument(
        "--max-side", type=_positive_int, default=d.max_side, help=f"longest side of a rendered page in px (default {d.max_side})"
    )
    r.add_argument("--min-side", type=int, default=d.min_side, help="enlarge pages so the shortest side is at least this")
    r.add_argument("--dpi", type=float, help="render at this DPI (still capped by --max-side)")
    r.add_argument("--mode", choices=MODES, default=d.mode, help=f"colour mode of the page images (default {d.mode})")
    r.add_argument(
        "--image-format",
        type=_jpeg_spelling("jpeg"),
        choices=IMAGE_FORMATS,
        default=d.image_format,
        help=f"page image encoding; jpg and jpeg are the same (default {d.image_format})",
    )
    r.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help=f"JPEG quality 1-95 (default {d.jpeg_quality})")
    t = p.add_argument_group("text")
    t.add_argument("--ocr", choices=OCR_ENGINES, default=d.ocr, help="OCR pages that have neither OCR JSON nor a text layer")
    t.add_argument("--ocr-lang", default=d.ocr_lang, help=f"tesseract language(s), e.g. eng+deu (default {d.ocr_lang})")
    s = p.add_argument_group("pages and limits")
    s.add_argument(
        "--pages", choices=PAGE_SELECTIONS, default=d.page_selection, help="all pages, the first N, or a seeded random N per document"
    )
    s.add_argument("--num-pages", type=_positive_int, default=d.num_pages, help="N for --pages first/random")
    s.add_argument("--seed", type=int, default=d.seed, help="seed of --pages random (with the document id)")
    s.add_argument(
        "--max-doc-pages",
        type=_positive_int,
        default=d.max_doc_pages,
        help=f"ledger longer documents as too_large (default {d.max_doc_pages})",
    )
    s.add_argument(
        "--max-doc-mb", type=float, default=d.max_doc_bytes / 2**20, help="ledger larger PDF files as too_large (default %(default)g)"
    )
    s.add_argument("--time-limit", type=float, default=d.time_limit_s, help="seconds per document step in the worker")
    s.add_argument(
        "--doc-time-limit", type=float, default=d.doc_time_limit_s, help="seconds of worker time per document (default %(default)g)"
    )
    s.add_argument("--memory-limit-mb", type=_positive_int, default=d.memory_limit_mb, help="address-space cap of the worker process")
    p.add_argument(
        "--samples-per-shard",
        "--pages-per-shard",
        dest="pages_per_shard",
        type=_positive_int,
        default=1000,
        help="pages per WebDataset shard (default 1000)",
    )
    add_step_arguments(p, "rendered page")
    add_ray_arguments(p)
    p.set_defaults(handler=_run_pdfs)


def _run_pdfs(args: argparse.Namespace) -> dict:
    from curation.pdf.settings import PdfSettings
    from pipelines.pdfs import PdfsConfig, run_pdfs

    settings = PdfSettings(
        max_side=args.max_side,
        min_side=args.min_side,
        dpi=args.dpi,
        mode=args.mode,
        image_format=args.image_format,
        jpeg_quality=args.jpeg_quality,
        page_selection=args.pages,
        num_pages=args.num_pages,
        seed=args.seed,
        max_doc_pages=args.max_doc_pages,
        max_doc_bytes=int(args.max_doc_mb * 2**20),
        ocr=args.ocr,
        ocr_lang=args.ocr_lang,
        time_limit_s=args.time_limit,
        doc_time_limit_s=args.doc_time_limit,
        memory_limit_mb=args.memory_limit_mb,
    )
    config = PdfsConfig(args.input, args.output, settings, args.pages_per_shard, args.ray_address, args.num_cpus, _steps(args))
    return run_pdfs(config)


def _add_pairs(sub: argparse._SubParsersAction) -> None:
    from curation.pairs.clip_embedder import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED

    p = sub.add_parser(
        "pairs",
        help="image-text pairs with a high-recall NSFW filter",
        description="Download (img2dataset) or read image-text pairs, score them with a CLIP-based NSFW detector "
        "(or the input's punsafe column), drop the most NSFW, and write one-image WebDataset shards.",
    )
    p.add_argument(
        "--input",
        type=_location,
        nargs="+",
        required=True,
        help="parquet URL lists (LAION COCO), parquet with image bytes, or WebDataset tars; local paths or object-store URLs",
    )
    p.add_argument(
        "--output",
        type=_location,
        required=True,
        help="output folder, local or an object-store URL (staging/, scores/, shards/, ledger/, report.json)",
    )
    p.add_argument(
        "--input-kind",
        choices=("auto", "urls", "bytes", "wds"),
        default="auto",
        help="auto: tar -> wds, parquet with an image column -> bytes, else URLs",
    )
    p.add_argument("--caption", choices=("synthetic", "alt"), default="synthetic", help="which caption to train on (default synthetic)")
    c = p.add_argument_group("columns (LAION COCO defaults)")
    c.add_argument("--url-column", default="URL", help="image URL column of URL lists (default URL, LAION's name)")
    c.add_argument("--alt-column", default="TEXT", help="alt-text column (default TEXT)")
    c.add_argument("--synthetic-column", default="top_caption", help="synthetic caption column (default top_caption, LAION COCO's)")
    c.add_argument("--image-column", default="image", help="image bytes column of parquet inputs that carry images (default image)")
    c.add_argument("--id-column", help="stable id column (default: <partition>/<row>)")
    d = p.add_argument_group("download")
    d.add_argument("--max-side", type=_positive_int, default=980, help="resize so the longest side is at most this (default 980)")
    d.add_argument("--download-threads", type=_positive_int, default=16, help="download threads per process (default 16)")
    d.add_argument("--download-timeout", type=int, default=10, help="seconds per socket operation")
    d.add_argument("--max-download-mb", type=float, default=20.0, help="largest image body accepted (default 20)")
    d.add_argument(
        "--allow-private-networks", action="store_true", help="allow image URLs on loopback/private addresses (refused by default)"
    )
    n = p.add_argument_group("NSFW")
    n.add_argument("--nsfw-source", choices=("model", "column"), default="model", help="compute scores, or use the input's punsafe column")
    n.add_argument("--nsfw-head", type=Path, help="NSFW head (.safetensors; see `curate nsfw-convert`)")
    n.add_argument(
        "--clip-model", default=DEFAULT_CLIP_MODEL, help=f"open_clip architecture or a model-config .json (default {DEFAULT_CLIP_MODEL})"
    )
    n.add_argument(
        "--clip-pretrained", default=DEFAULT_CLIP_PRETRAINED, help="open_clip weights tag or local checkpoint; 'none' for random weights"
    )
    n.add_argument("--clip-batch-size", type=_positive_int, default=64, help="images per CLIP forward pass (default 64)")
    n.add_argument(
        "--drop-top-nsfw", type=_fraction, help="drop this fraction of pairs with the highest NSFW score (the paper removed 0.07)"
    )
    n.add_argument("--nsfw-threshold", type=float, help="drop pairs scoring above this")
    n.add_argument("--nsfw-actors", type=_positive_int, help="CLIP scoring actors (default: one per GPU, else one per spare CPU)")
    n.add_argument("--embeddings", action="store_true", help="also write the CLIP embeddings sidecar (embeddings/)")
    o = p.add_argument_group("output")
    o.add_argument(
        "--image-format",
        type=_jpeg_spelling("jpg"),
        choices=("jpg", "png", "webp"),
        default="jpg",
        help="encoding of downloaded images; jpg and jpeg are the same (default jpg)",
    )
    o.add_argument("--samples-per-shard", type=_positive_int, default=1000, help="pairs per WebDataset shard (default 1000)")
    add_step_arguments(p, "pair")
    add_ray_arguments(p)
    p.set_defaults(handler=_run_pairs)


def _run_pairs(args: argparse.Namespace) -> dict:
    from curation.pairs.clip_embedder import ClipConfig
    from curation.pairs.download import DownloadOptions
    from curation.pairs.pair import PairColumns
    from pipelines.pairs import PairsConfig, run_pairs

    if args.nsfw_source == "model" and args.drop_top_nsfw is None and args.nsfw_threshold is None:
        raise PipelineError("give --drop-top-nsfw F and/or --nsfw-threshold T (scoring without a rule drops nothing)")
    config = PairsConfig(
        inputs=args.input,
        output=args.output,
        input_kind=args.input_kind,
        columns=PairColumns(
            url=args.url_column,
            alt_text=args.alt_column,
            synthetic_caption=args.synthetic_column,
            image=args.image_column,
            id=args.id_column,
        ),
        caption=args.caption,
        download=DownloadOptions(
            max_side=args.max_side,
            threads=args.download_threads,
            timeout_s=args.download_timeout,
            max_bytes=int(args.max_download_mb * 2**20),
            allow_private_networks=args.allow_private_networks,
        ),
        nsfw_source=args.nsfw_source,
        clip=ClipConfig(
            model=args.clip_model,
            pretrained=None if args.clip_pretrained.lower() == "none" else args.clip_pretrained,
            batch_size=args.clip_batch_size,
        ),
        nsfw_head=args.nsfw_head,
        drop_top_nsfw=args.drop_top_nsfw,
        nsfw_threshold=args.nsfw_threshold,
        image_format=args.image_format,
        embeddings=args.embeddings,
        samples_per_shard=args.samples_per_shard,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        nsfw_actors=args.nsfw_actors,
        steps=_steps(args),
    )
    return run_pairs(config)


def _add_nsfw_tools(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nsfw-calibrate",
        help="pick the NSFW threshold for a target recall on a labelled sample",
        description="Read labelled scores and print the threshold that reaches the target recall, with the "
        "precision, recall and removal rate it implies (pass it back as --nsfw-threshold).",
    )
    p.add_argument(
        "--labels", type=Path, required=True, help="parquet or csv with `id` and `label` (1 = NSFW), and `score` unless --scores is given"
    )
    p.add_argument("--scores", type=Path, help="a `curate pairs` scores/ folder to take the scores from, joined by id")
    p.add_argument("--target-recall", type=float, default=0.95, help="share of the NSFW images to catch (default 0.95)")
    p.add_argument("--plot", type=Path, help="write the precision/recall curve as a PNG")
    p.set_defaults(handler=_run_calibrate)

    c = sub.add_parser(
        "nsfw-convert",
        help="convert a released LAION NSFW head to safetensors",
        description="Convert the LAION CLIP-based NSFW detector head (Keras .h5, or a torch state dict for H/14) "
        "into the safetensors file `curate pairs --nsfw-head` loads. No pickle is executed.",
    )
    c.add_argument("src", type=Path, help="the released head (.h5 or a torch state dict)")
    c.add_argument("dst", type=Path, help="the safetensors file to write")
    c.add_argument(
        "--output-activation",
        choices=("sigmoid", "none"),
        help="activation of the last layer (default: sigmoid for Keras .h5, none for a torch state dict)",
    )
    c.set_defaults(handler=_run_convert)


def _run_calibrate(args: argparse.Namespace) -> dict:
    from pipelines.calibrate import run_calibration

    return run_calibration(args.labels, args.scores, args.target_recall, args.plot)


def _run_convert(args: argparse.Namespace) -> dict:
    from curation.pairs.nsfw_convert import convert

    head = convert(args.src, args.dst, args.output_activation)
    print(f"wrote {args.dst}: dims {head.spec.dims}, activations {head.spec.activations}")
    return {}


def _add_cauldron(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cauldron",
        help="The Cauldron: build prompted subsets, mix instruction data",
        description="Build The Cauldron's subsets and training mixtures.",
    )
    cmds = p.add_subparsers(dest="cauldron_command", required=True, metavar="STEP")
    b = cmds.add_parser(
        "build",
        help="adapt sources into the_cauldron schema, merge by image, remove eval-set duplicates",
        description="Adapt raw datasets into the_cauldron schema (one user/assistant format), merge rows with "
        "identical images, remove rows that match evaluation sets, write one parquet per subset.",
    )
    b.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="NAME[:ADAPTER]=PATH",
        help="a source dataset: a folder or file of parquet, arrow (save_to_disk), json, jsonl, or zip/tar "
        "of json(l); repeat for more (see `cauldron/data/registry.yaml` for what to download per subset)",
    )
    b.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an evaluation set to deduplicate against (parquet, HF dataset folder, image folder; a path or a URL)",
    )
    b.add_argument(
        "--output",
        type=_location,
        required=True,
        help="output folder, local or an object-store URL (<subset>/*.parquet, ledger/, report.json)",
    )
    b.add_argument("--adapters", type=Path, help="YAML with declarative adapters for your own datasets")
    b.add_argument("--phash-threshold", type=int, default=8, help="max Hamming distance of perceptual hashes counted as a copy (default 8)")
    b.add_argument("--no-merge", action="store_true", help="keep rows with identical images apart")
    b.add_argument("--seed", type=int, default=0, help="seed of the prompt templates")
    b.add_argument(
        "--allow-eval-splits",
        action="store_true",
        help="read files and rows that name an evaluation split (test, val, testdev, ...); refused by default",
    )
    d = b.add_argument_group("images given only as URLs (NLVR2, Localized Narratives)")
    d.add_argument(
        "--fetch-images",
        action="store_true",
        help="download them with the guarded downloader of `curate pairs` (default: ledger those rows)",
    )
    d.add_argument("--max-side", type=_positive_int, default=980, help="resize downloads so the longest side is at most this (default 980)")
    d.add_argument("--download-threads", type=_positive_int, default=16, help="download threads (default 16)")
    d.add_argument("--download-timeout", type=int, default=10, help="seconds per socket operation (default 10)")
    d.add_argument("--max-download-mb", type=float, default=20.0, help="largest image body accepted (default 20)")
    d.add_argument(
        "--allow-private-networks", action="store_true", help="allow image URLs on loopback/private addresses (refused by default)"
    )
    add_ray_arguments(b)
    b.set_defaults(handler=_run_cauldron_build)
    m = cmds.add_parser(
        "mix",
        help="mix subsets at target answer-token shares into SFT shards",
        description="Count answer tokens, repeat or sub-sample each subset to hit its share, and write "
        "shuffled WebDataset SFT shards with a target-vs-achieved report and bar chart.",
    )
    m.add_argument(
        "--input",
        type=_location,
        nargs="+",
        required=True,
        help="folders of <subset>/*.parquet (the output of `build`, or the_cauldron); local or object-store URLs",
    )
    m.add_argument(
        "--output",
        type=_location,
        required=True,
        help="output folder, local or an object-store URL (shards/, report.json, mixture_shares.png)",
    )
    m.add_argument("--tokenizer", required=True, help="tokenizer (hub id or folder) that counts answer tokens")
    m.add_argument("--config", type=Path, help="mixture YAML (default: the shipped Idefics2 Table 14 mixture)")
    m.add_argument("--total-tokens", type=int, help="answer-token budget of the mixture (default: all given)")
    m.add_argument("--seed", type=int, default=0, help="seed of the sub-sampling, repetition and shuffle")
    m.add_argument("--samples-per-shard", type=_positive_int, default=1000, help="conversations per WebDataset shard (default 1000)")
    add_ray_arguments(m)
    m.set_defaults(handler=_run_cauldron_mix)
    s = cmds.add_parser(
        "sources",
        help="print where each subset is published and the commands that make it a --source of build",
        description="For each named dataset (default: all of Table 14), print the Hub id and split (or the release "
        "files), the download and preparation commands, and the --source argument of `curate cauldron build`.",
    )
    s.add_argument("names", nargs="*", metavar="NAME", help="registry names (e.g. vqav2 nlvr2 openhermes)")
    s.set_defaults(handler=_run_cauldron_sources)


def _key_value(items: list[str], what: str) -> dict[str, StoragePath]:
    pairs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{what} is NAME=PATH, got {item!r}")
        pairs[name] = storage_path(path)
    return pairs


def _run_cauldron_build(args: argparse.Namespace) -> dict:
    from curation.pairs.download import DownloadOptions
    from pipelines.cauldron import BuildConfig, SourceSpec, run_build

    fetch = None
    if args.fetch_images:
        fetch = DownloadOptions(
            max_side=args.max_side,
            threads=args.download_threads,
            timeout_s=args.download_timeout,
            max_bytes=int(args.max_download_mb * 2**20),
            allow_private_networks=args.allow_private_networks,
        )
    config = BuildConfig(
        sources=[SourceSpec.parse(s) for s in args.source],
        output=args.output,
        evals=_key_value(args.eval, "--eval"),
        adapters_yaml=args.adapters,
        seed=args.seed,
        phash_threshold=args.phash_threshold,
        merge=not args.no_merge,
        allow_eval_splits=args.allow_eval_splits,
        fetch_images=fetch,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
    )
    return run_build(config)


def _run_cauldron_mix(args: argparse.Namespace) -> dict:
    from pipelines.cauldron_mix import MixConfig, run_mix

    return run_mix(
        MixConfig(
            args.input,
            args.output,
            args.tokenizer,
            args.config,
            args.total_tokens,
            args.seed,
            args.samples_per_shard,
            args.ray_address,
            args.num_cpus,
        )
    )


def _run_cauldron_sources(args: argparse.Namespace) -> dict:
    from cauldron.registry import load_registry

    registry = load_registry()
    names = args.names or [info.name for info in registry]
    for name in names:
        try:
            info = registry[name]
        except KeyError as exc:
            raise PipelineError(exc.args[0]) from None
        source = info.source
        if source is None:
            print(f"# {name}: no source documented\n")
            continue
        where = source.hub or "release files"
        print(f"# {name} ({info.paper_name}): {where}, split {source.split}" + (f"; {source.note}" if source.note else ""))
        print("\n".join(source.commands(name)))
        print(source.source_argument(name, info.adapter) + "\n")
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="curate", description="Build Idefics2-style vision-language training data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_obelics(sub)
    _add_pdfs(sub)
    _add_pairs(sub)
    _add_nsfw_tools(sub)
    _add_cauldron(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except PipelineError as exc:
        print(f"curate {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ModelUnavailableError, UserError, FileNotFoundError) as exc:  # anything else is a bug: traceback
        print(f"curate {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curate {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
