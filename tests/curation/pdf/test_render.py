import difflib
import io
import math
import random
import re
import subprocess

import pytest
from PIL import Image, ImageChops, ImageStat

from curation.errors import SampleError
from curation.pdf.document import render_document
from curation.pdf.render import fit_size
from curation.pdf.settings import PdfSettings
from tests.curation.pdf.conftest import require_tool
from tests.curation.pdf.docs import item, mixed_pdf


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    data, pages = mixed_pdf()
    path = tmp_path_factory.mktemp("pdf") / "mixed.pdf"
    path.write_bytes(data)
    return path, data, pages


def poppler_pages(path) -> list[tuple[float, float, int]]:
    """(width, height, rotation) per page, from pdfinfo."""
    command = [require_tool("pdfinfo"), "-f", "1", "-l", "9999", str(path)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+)", out)
    rotations = re.findall(r"Page\s+\d+ rot:\s+(\d+)", out)
    pages = re.search(r"^Pages:\s+(\d+)", out, re.M)
    assert pages is not None
    count = int(pages.group(1))
    assert len(sizes) == len(rotations) == count
    return [(float(w), float(h), int(r)) for (w, h), r in zip(sizes, rotations)]


def displayed(width: float, height: float, rotation: int) -> tuple[float, float]:
    return (height, width) if rotation in (90, 270) else (width, height)


def normalised(text: str) -> str:
    return " ".join(text.split())


def test_fit_size_keeps_the_long_side_within_max_side():
    assert fit_size(612, 792, math.inf, 980) == (757, 980)
    assert fit_size(612, 792, 2.0, 980) == (757, 980)  # 144 DPI would be 1224 x 1584
    assert fit_size(300, 150, 2.0, 980) == (600, 300)
    assert fit_size(1000, 200, 0.1, 980, min_side=100) == (500, 100)  # enlarged to reach the min side
    with pytest.raises(SampleError) as raised:
        fit_size(2000, 100, math.inf, 980, min_side=100)
    assert raised.value.reason == "page_too_small"
    rng = random.Random(0)
    for _ in range(2000):
        w, h = rng.uniform(1, 20000), rng.uniform(1, 20000)
        max_side = rng.randint(1, 3000)
        out = fit_size(w, h, rng.choice([math.inf, rng.uniform(0.01, 10)]), max_side)
        assert max(out) <= max_side and min(out) >= 1


def test_rendered_sizes_follow_max_side_and_page_counts_match_pdfinfo(mixed):
    path, data, pages = mixed
    reference = poppler_pages(path)
    result = render_document(item(data), PdfSettings())
    assert not result.failures
    assert result.page_count == len(reference) == len(pages)
    assert [p.page_index for p in result.pages] == list(range(len(pages)))
    for sample, (width, height, rotation) in zip(result.pages, reference):
        shown_w, shown_h = displayed(width, height, rotation)
        assert max(sample.width, sample.height) == 980
        assert abs(sample.width / sample.height - shown_w / shown_h) < 0.01 * shown_w / shown_h
        image = Image.open(io.BytesIO(sample.image))
        assert image.format == "PNG" and image.size == (sample.width, sample.height) and image.mode == "RGB"


def test_fixed_dpi_renders_at_that_resolution_unless_capped(mixed):
    path, data, _ = mixed
    settings = PdfSettings(dpi=144, max_side=1300, mode="L", image_format="jpeg", jpeg_quality=80)
    result = render_document(item(data), settings)
    for sample, (width, height, rotation) in zip(result.pages, poppler_pages(path)):
        shown_w, shown_h = displayed(width, height, rotation)
        want = (round(shown_w * 2), round(shown_h * 2))
        if max(want) <= 1300:
            assert (sample.width, sample.height) == want and sample.dpi == pytest.approx(144, rel=0.01)
        else:
            assert max(sample.width, sample.height) == 1300 and sample.dpi < 144
        image = Image.open(io.BytesIO(sample.image))
        assert image.format == "JPEG" and image.mode == "L" and sample.image_ext == "jpg"
        assert sample.metadata()["render"] == {
            "dpi": sample.dpi,
            "width": sample.width,
            "height": sample.height,
            "mode": "L",
            "format": "jpeg",
            "quality": 80,
        }


def test_text_layer_matches_what_was_written_and_pdftotext(mixed):
    path, data, pages = mixed
    pdftotext = require_tool("pdftotext")
    result = render_document(item(data), PdfSettings())
    for sample, page in zip(result.pages, pages):
        assert sample.text == "\n".join(page.lines)
        assert sample.text_source == ("text_layer" if page.lines else "none")
        poppler = subprocess.run(
            [pdftotext, "-f", str(sample.page_index + 1), "-l", str(sample.page_index + 1), str(path), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ratio = difflib.SequenceMatcher(None, normalised(sample.text), normalised(poppler)).ratio()
        assert ratio >= 0.95 or not (sample.text or poppler.strip()), (sample.text, poppler)


def _poppler_words(path, page_index: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    out = subprocess.run(
        [require_tool("pdftotext"), "-bbox", "-f", str(page_index + 1), "-l", str(page_index + 1), str(path), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pattern = r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>'
    return [(w, (float(a), float(b), float(c), float(d))) for a, b, c, d, w in re.findall(pattern, out)]


def test_word_boxes_agree_with_pdftotext_bbox_on_plain_and_rotated_pages(mixed):
    path, data, _ = mixed
    result = render_document(item(data), PdfSettings())
    reference = poppler_pages(path)
    checked = 0
    for sample in result.pages:
        width, height, rotation = reference[sample.page_index]
        shown_w, shown_h = displayed(width, height, rotation)
        poppler = _poppler_words(path, sample.page_index)
        assert [w.text for w in sample.words] == [w for w, _ in poppler]
        for ours, (_, (x0, y0, x1, y1)) in zip(sample.words, poppler):
            theirs = (x0 / shown_w, y0 / shown_h, x1 / shown_w, y1 / shown_h)
            # the centres agree closely; heights differ a little (ascent/descent conventions)
            assert abs((ours.box[0] + ours.box[2]) / 2 - (theirs[0] + theirs[2]) / 2) < 0.02
            assert abs((ours.box[1] + ours.box[3]) / 2 - (theirs[1] + theirs[3]) / 2) < 0.02
            checked += 1
    assert checked > 50


def test_word_boxes_cover_ink_in_the_rendered_image(mixed):
    _, data, _ = mixed
    result = render_document(item(data), PdfSettings(mode="L"))
    for sample in result.pages:
        image = Image.open(io.BytesIO(sample.image))
        for word in sample.words:
            x0, y0, x1, y1 = word.box
            w, h = image.size
            crop = image.crop((int(x0 * w), int(y0 * h), math.ceil(x1 * w), math.ceil(y1 * h)))
            darkest = crop.getextrema()[0]  # one band: (min, max)
            assert isinstance(darkest, (int, float)) and darkest < 160, (sample.page_index, word)  # ink inside the box (tiny text is grey)


def test_embedded_image_renders_like_pdftoppm(mixed, tmp_path):
    path, data, pages = mixed
    index = next(i for i, p in enumerate(pages) if p.image is not None and p.lines)
    sample = render_document(item(data), PdfSettings()).pages[index]
    ours = Image.open(io.BytesIO(sample.image)).convert("RGB")
    centre = ours.getpixel((int(ours.width * 250 / 612), int(ours.height * (1 - 250 / 792))))
    assert isinstance(centre, tuple)
    assert centre[0] > 180 and centre[1] < 80 and centre[2] < 80  # the red photo is where it was placed
    subprocess.run(
        [
            require_tool("pdftoppm"),
            "-f",
            str(index + 1),
            "-l",
            str(index + 1),
            "-scale-to-x",
            str(ours.width),
            "-scale-to-y",
            str(ours.height),
            "-png",
            str(path),
            str(tmp_path / "ref"),
        ],
        check=True,
    )
    reference = Image.open(next(tmp_path.glob("ref*.png"))).convert("RGB")
    assert reference.size == ours.size
    mean_difference = sum(ImageStat.Stat(ImageChops.difference(ours, reference)).mean) / 3
    assert mean_difference < 3.0  # same picture; only anti-aliasing and font hinting differ


def test_grayscale_and_min_side(mixed):
    _, data, pages = mixed
    result = render_document(item(data), PdfSettings(mode="L", max_side=500, min_side=100))
    too_small = [f for f in result.failures if f.reason == "page_too_small"]
    elongated = [i for i, p in enumerate(pages) if max(p.width, p.height) / min(p.width, p.height) > 5]
    assert [f.page for f in too_small] == elongated
    for sample in result.pages:
        assert max(sample.width, sample.height) <= 500 and min(sample.width, sample.height) >= 100
        assert Image.open(io.BytesIO(sample.image)).mode == "L"


@pytest.mark.parametrize("where", ["open", "frames"])
def test_out_of_memory_opening_an_image_is_memory_limit_not_decode_error(where, monkeypatch):
    from PIL import TiffImagePlugin

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    if where == "open":
        monkeypatch.setattr(Image, "open", out_of_memory)
    else:
        monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "n_frames", property(out_of_memory))
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    data = buffer.getvalue()
    result = render_document(item(data, "scan", kind="tiff"), PdfSettings())
    assert [(f.page, f.reason) for f in result.failures] == [(None, "memory_limit")]
