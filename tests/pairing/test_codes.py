"""The codes and the label sheets, I/O-free: formats, typo detection, and the rendered PDF and PNG
read back with a real QR decoder (zxing-cpp; the PDF rasterised by PDFium)."""

from __future__ import annotations

import io

import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image

from cloud.pairing import CodeFormatError, labels
from cloud.pairing import codes as codec


def qr_texts(image: Image.Image) -> set[str]:
    """Every QR code zxing-cpp finds in ``image``."""
    return {r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)}


def pdf_qr_texts(pdf: bytes) -> tuple[int, set[str]]:
    """(pages, every QR code on them), rasterised at 150 dpi as a phone or scanner sees it."""
    document = pdfium.PdfDocument(pdf)
    found: set[str] = set()
    for page in document:
        found |= qr_texts(page.render(scale=150 / 72).to_pil())
    return len(document), found


def test_codes_carry_enough_randomness_and_read_back_forgivingly() -> None:
    charger, box = codec.new_charger_code(), codec.new_box_code()
    assert len(charger) == 12 and len(box) == 20  # 55 and 95 random bits, plus a check character
    assert len(codec.ALPHABET) == 32 and codec.BOX_RANDOM * 5 >= 80
    shown = codec.grouped(box)
    assert shown.count("-") == 3 and codec.parse_box_code(shown) == box
    # Dashes, spaces, lower case and the look-alikes O/0, I/L/1 are forgiven.
    sloppy = " ".join(codec.grouped(charger).lower().split("-")).replace("0", "o").replace("1", "l")
    assert codec.parse_charger_code(sloppy) == charger
    assert len({codec.new_box_code() for _ in range(200)}) == 200


def test_every_single_typo_and_neighbour_swap_is_caught_by_the_check_character() -> None:
    code = codec.new_charger_code()
    for i in range(len(code)):
        for other in codec.ALPHABET:
            if other != code[i]:
                typo = code[:i] + other + code[i + 1 :]
                with pytest.raises(CodeFormatError):
                    codec.parse_charger_code(typo)
    for i in range(len(code) - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
            with pytest.raises(CodeFormatError):
                codec.parse_charger_code(swapped)


def test_the_wrong_label_and_foreign_characters_are_named() -> None:
    box = codec.grouped(codec.new_box_code())
    with pytest.raises(CodeFormatError, match="the other label") as raised:
        codec.parse_charger_code(box)
    assert raised.value.field == "charger_code"
    with pytest.raises(CodeFormatError, match="Crockford") as raised:
        codec.parse_box_code("U" * 20)
    assert raised.value.field == "box_code"


def test_label_sheets_in_pdf_and_png_decode_back_to_the_codes() -> None:
    per_page = labels.rows_per_page()
    sheet = [
        labels.Label(
            codec.grouped(codec.new_charger_code()),
            codec.grouped(codec.new_box_code()),
            f"SN-{n:04d}",
        )
        for n in range(per_page + 1)  # two pages
    ]
    wanted = {label.charger_code for label in sheet} | {label.box_code for label in sheet}

    pages, found = pdf_qr_texts(labels.render(sheet, "pdf"))
    assert pages == 2 and found == wanted

    png = Image.open(io.BytesIO(labels.render(sheet, "png")))
    assert png.size == (labels.PAGE[0], 2 * labels.PAGE[1])
    assert round(png.info["dpi"][0]) == labels.DPI
    assert qr_texts(png) == wanted

    with pytest.raises(ValueError, match="pdf or png"):
        labels.render(sheet, "svg")
