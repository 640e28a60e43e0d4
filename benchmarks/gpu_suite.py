"""Every GPU measurement in one run: each figure next to its baseline, one table, one JSON file.

    python benchmarks/gpu_suite.py                       # one GPU, about 8 minutes
    python benchmarks/gpu_suite.py --smoke               # tiny shapes, seconds: proves every section still runs
    python benchmarks/gpu_suite.py --sections perplexity,nsfw --json out.json

Sections are the modules of `benchmarks/gpu/` (perplexity, nsfw, trainer), each with
`run(smoke: bool) -> list[dict]` (row keys in `benchmarks/gpu/__init__.py`); a section whose module is
absent is skipped. A section that fails is reported with its error and the others still run; the exit
status is then 1. Without a GPU the suite runs in smoke mode (full shapes would take hours on a CPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

SECTIONS = ("perplexity", "nsfw", "trainer")
COLUMNS = ("section", "name", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "met", "notes")


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    return f"cpu: {platform.processor() or platform.machine()}"


def run_section(name: str, smoke: bool) -> dict:
    """{"rows": [...], "seconds": s} or {"skipped": why} or {"error": traceback}."""
    try:
        module = importlib.import_module(f"benchmarks.gpu.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.gpu.{name}":
            raise
        return {"skipped": f"benchmarks/gpu/{name}.py is absent"}
    start = time.perf_counter()
    try:
        rows = module.run(smoke)
    except Exception:  # one broken section must not cost the figures of the others on a scarce device
        return {"error": traceback.format_exc(), "seconds": time.perf_counter() - start}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"rows": rows, "seconds": time.perf_counter() - start}


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e7):
            return f"{value:.2e}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def table(rows: list[dict]) -> str:
    cells = [[cell(row.get(column)) for column in COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks that every section runs")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, default=Path("out/gpu_suite.json"), help="where to write the results")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
    smoke = args.smoke or not torch.cuda.is_available()
    if smoke and not args.smoke:
        print("no GPU: running the smoke mode (tiny shapes)", flush=True)

    started = datetime.now(UTC)
    results = {}
    for name in sections:
        print(f"== {name}", flush=True)
        results[name] = run_section(name, smoke)
        outcome = results[name]
        print(outcome.get("skipped") or outcome.get("error") or f"   {outcome['seconds']:.0f}s", flush=True)

    rows = [row for outcome in results.values() for row in outcome.get("rows", [])]
    report = {
        "device": device_name(),
        "date": started.isoformat(timespec="seconds"),
        "smoke": smoke,
        "torch": torch.__version__,
        "sections": results,
    }
    print(f"\n{report['device']}, {report['date']}{', SMOKE (numbers mean nothing)' if smoke else ''}\n")
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {args.json}")
    failed = [name for name, outcome in results.items() if "error" in outcome]
    if failed:
        print(f"failed sections: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
