import shutil

import pytest

from curation.pdf.worker import DocumentWorker


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install tesseract-ocr tesseract-ocr-eng poppler-utils)")
    return path


@pytest.fixture(scope="module")
def worker():
    with DocumentWorker() as shared:
        yield shared
