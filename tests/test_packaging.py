"""The library stands alone: no test fixtures imported by library code, no side effects on import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from curation.pdf.document import _locked_sentinel

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("curation", "cauldron", "pipelines", "training")


def test_library_code_never_imports_tests():
    offenders = [
        str(path.relative_to(ROOT))
        for package in LIBRARY
        for path in (ROOT / package).rglob("*.py")
        if "from tests" in path.read_text() or "import tests" in path.read_text()
    ]
    assert offenders == []


def test_importing_pipelines_leaves_the_environment_alone():
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    env["PYTHONPATH"] = str(ROOT)
    code = "import os, pipelines.cli, pipelines.runtime, pipelines.obelics, pipelines.pairs; print(os.environ.get('RAY_AUTH_MODE'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "None"


def test_the_bundled_locked_sentinel_asks_for_a_password():
    with pytest.raises(pdfium.PdfiumError) as raised:
        pdfium.PdfDocument(_locked_sentinel())
    assert raised.value.err_code == pdfium.raw.FPDF_ERR_PASSWORD
