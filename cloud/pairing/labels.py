"""Label sheets, I/O-free: QR codes of each charger's two codes, with the text under each, laid
out on printable A4 pages and returned as PDF or PNG bytes.

One row per charger: the charger label (its QR code, the charger code, the serial) to stick on
the charger, and the box label (the box code's QR, the code, "keep it secret") for the inside of
the box, each framed by a thin cut line. ``segno`` makes each QR code (error correction M, the
bare grouped code in alphanumeric mode: a phone app scans it as typed); Pillow lays out the page
at 300 dpi and writes both formats: the PDF's pages are 1-bit images (lossless, so the printed
modules are exactly the rendered ones), the PNG is all pages stacked in one image.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import segno
from PIL import Image, ImageDraw, ImageFont

DPI = 300
PAGE = (2480, 3508)  # A4 at 300 dpi
MARGIN = 120
COLUMNS = 2  # labels per row: the charger's, then its box's
ROW_HEIGHT = 620
MODULE = 12  # pixels per QR module: 1 mm at 300 dpi, well above what phone cameras need
QR_BORDER = 4  # the quiet zone ISO/IEC 18004 asks for, in modules
CODE_TEXT = 46
SMALL_TEXT = 32
FORMATS = {"pdf": "application/pdf", "png": "image/png"}


@dataclasses.dataclass(frozen=True)
class Label:
    """What one charger's pair of labels shows."""

    charger_code: str  # grouped, as printed
    box_code: str  # grouped, as printed
    caption: str  # under the charger code: the serial


def rows_per_page() -> int:
    """How many chargers one page holds."""
    return (PAGE[1] - 2 * MARGIN) // ROW_HEIGHT


def _qr(text: str) -> Image.Image:
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="png", scale=MODULE, border=QR_BORDER)
    out.seek(0)
    return Image.open(out).convert("L")


def _cell(
    page: Image.Image,
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    code: str,
    lines: Sequence[str],
) -> None:
    left, top, right, bottom = box
    draw.rectangle(box, outline=0, width=2)  # the cut line
    qr = _qr(code)
    centre = (left + right) // 2
    page.paste(qr, (centre - qr.width // 2, top + 16))
    y = top + 16 + qr.height + 4
    big = ImageFont.load_default(size=CODE_TEXT)
    small = ImageFont.load_default(size=SMALL_TEXT)
    draw.text((centre, y), code, font=big, fill=0, anchor="mt")
    y += CODE_TEXT + 14
    for line in lines:
        draw.text((centre, y), line, font=small, fill=0, anchor="mt")
        y += SMALL_TEXT + 8
    assert y <= bottom, "the label's text runs past its cell"


def pages(labels: Sequence[Label]) -> list[Image.Image]:
    """The sheets, as 1-bit images of A4 at 300 dpi (at least one page, maybe blank)."""
    per_page = rows_per_page()
    width = (PAGE[0] - 2 * MARGIN) // COLUMNS
    sheets: list[Image.Image] = []
    for start in range(0, max(len(labels), 1), per_page):
        page = Image.new("L", PAGE, 255)
        draw = ImageDraw.Draw(page)
        for row, label in enumerate(labels[start : start + per_page]):
            top = MARGIN + row * ROW_HEIGHT
            bottom = top + ROW_HEIGHT - 20
            _cell(
                page,
                draw,
                (MARGIN, top, MARGIN + width - 20, bottom),
                label.charger_code,
                ("CHARGER CODE", label.caption[:48]),
            )
            _cell(
                page,
                draw,
                (MARGIN + width, top, MARGIN + 2 * width - 20, bottom),
                label.box_code,
                ("BOX SECURITY CODE", "keep it secret: it makes you the owner"),
            )
        # 1-bit: no grey edge for a printer to dither, lossless in the PDF.
        sheets.append(page.point(lambda v: 255 if v > 127 else 0, mode="1"))
    return sheets


def render(labels: Sequence[Label], kind: str) -> bytes:
    """The sheet of ``labels`` as ``kind`` (``pdf``: one page per sheet; ``png``: the sheets
    stacked in one image), ready to print at 300 dpi."""
    sheets = pages(labels)
    out = io.BytesIO()
    if kind == "pdf":
        sheets[0].save(
            out,
            format="PDF",
            resolution=DPI,
            save_all=True,
            append_images=sheets[1:],
            title="ampfleet labels",
        )
    elif kind == "png":
        tall = Image.new("1", (PAGE[0], PAGE[1] * len(sheets)), 1)
        for index, sheet in enumerate(sheets):
            tall.paste(sheet, (0, index * PAGE[1]))
        tall.save(out, format="PNG", dpi=(DPI, DPI), optimize=True)
    else:
        raise ValueError(f"no label format {kind!r}: pdf or png")
    return out.getvalue()
