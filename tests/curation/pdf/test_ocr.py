import difflib
import io

from curation.pdf.document import render_document
from curation.pdf.ocr import ocr_page
from curation.pdf.settings import PdfSettings
from tests.curation.pdf.conftest import require_tool
from tests.curation.pdf.docs import PANGRAM, item, scanned_page
from tests.fixtures.pdf_writer import build_pdf, text_image

KNOWN = "\n".join(PANGRAM)


def test_a_rendered_text_image_ocrs_to_the_known_text():
    require_tool("tesseract")
    image = text_image(PANGRAM, font_size=32)
    page = ocr_page(image)
    assert page.text == KNOWN and page.source == "tesseract"
    assert [line.text for line in page.lines] == PANGRAM
    assert [w.text for w in page.words] == " ".join(PANGRAM).split()
    first, last = page.words[0].box, page.words[-1].box
    assert first[0] < last[0] and first[1] < last[1]  # "The" is top-left of "12345."
    assert all(0 <= v <= 1 for w in page.words for v in w.box)


def test_a_scanned_pdf_page_without_text_layer_falls_back_to_ocr():
    require_tool("tesseract")
    data = build_pdf([scanned_page(PANGRAM)])
    without = render_document(item(data), PdfSettings())
    assert without.pages[0].text == "" and without.pages[0].text_source == "none"
    result = render_document(item(data), PdfSettings(ocr="tesseract"))
    page = result.pages[0]
    assert page.text_source == "tesseract"
    assert difflib.SequenceMatcher(None, page.text, KNOWN).ratio() > 0.95, page.text
    # boxes are page fractions, independent of the OCR resolution: the text sits in the top part
    assert all(line.box[3] < 0.5 for line in page.lines)


def test_image_documents_are_ocred_at_their_own_resolution():
    require_tool("tesseract")
    buffer = io.BytesIO()
    text_image(PANGRAM, font_size=40).save(buffer, format="PNG")
    result = render_document(item(buffer.getvalue(), kind="image"), PdfSettings(ocr="tesseract", max_side=300))
    page = result.pages[0]
    assert max(page.width, page.height) == 300
    assert page.text == KNOWN and page.dpi == 0.0
