"""The ChArUco board as a printable page at true scale, with a ruler to check the print.

``render_page(spec, dpi)`` draws the board (no quiet zone is needed beyond the
white margin), a 100 mm ruler with millimetre ticks and a caption naming the
board, all at ``dpi`` pixels per inch. ``write_png`` stores the DPI in the PNG
(``pHYs`` chunk) so print dialogs offer the true size; ``write_pdf`` wraps the
same page in a one-page PDF (written here: one Flate-compressed grey image
whose page size in points is the page's size in inches x 72), so printed at
100 % ("actual size", no "fit to page") the squares measure ``square_mm``.

The ruler is the check: after printing, measure it and a square with a
calliper; write the measured square size into the board YAML.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ..rig.foundation.errors import CalibrationError
from .board import BoardSpec, make_board

DEFAULT_DPI = 300
MARGIN_MM = 15.0
RULER_MM = 100.0
FOOTER_MM = 30.0  # ruler and caption under the board


def px_per_mm(dpi: float) -> float:
    return dpi / 25.4


def render_page(spec: BoardSpec, dpi: float = DEFAULT_DPI) -> np.ndarray:
    """The page (uint8 grey): margin, board at true scale, ruler and caption."""
    if not 72 <= dpi <= 1200:
        raise CalibrationError(f"DPI must be within 72..1200, got {dpi}")
    k = px_per_mm(dpi)
    board_w_mm, board_h_mm = spec.squares_x * spec.square_mm, spec.squares_y * spec.square_mm
    page_w_mm = board_w_mm + 2 * MARGIN_MM
    page_h_mm = board_h_mm + 2 * MARGIN_MM + FOOTER_MM
    W, H = round(page_w_mm * k), round(page_h_mm * k)
    page = np.full((H, W), 255, np.uint8)
    bw, bh = round(board_w_mm * k), round(board_h_mm * k)
    board = make_board(spec).generateImage((bw, bh), marginSize=0, borderBits=1)
    x0 = y0 = round(MARGIN_MM * k)
    page[y0:y0 + bh, x0:x0 + bw] = board
    _ruler(page, k, x0, y0 + bh + round(6 * k), min(RULER_MM, board_w_mm))
    caption = (f"ChArUco {spec.squares_x}x{spec.squares_y}, square {spec.square_mm:g} mm, marker "
               f"{spec.marker_mm:g} mm, {spec.dictionary}; print at 100 % (actual size), {dpi:g} dpi")
    scale = 2.6 * k / 30.0  # about 2.6 mm tall letters
    cv2.putText(page, caption, (x0, y0 + bh + round(24 * k)), cv2.FONT_HERSHEY_SIMPLEX, scale, 0,
                max(1, round(0.25 * k)), cv2.LINE_AA)
    return page


def _ruler(page: np.ndarray, k: float, x0: int, y: int, length_mm: float) -> None:
    """A ruler of ``length_mm`` starting at x0: mm ticks, longer every 5 and 10 mm, cm numbers."""
    thick = max(1, round(0.2 * k))
    n = int(length_mm)
    cv2.line(page, (x0, y), (x0 + round(n * k), y), 0, thick)
    for mm in range(n + 1):
        x = x0 + round(mm * k)
        tick = 4.0 if mm % 10 == 0 else 2.5 if mm % 5 == 0 else 1.5
        cv2.line(page, (x, y), (x, y + round(tick * k)), 0, thick)
        if mm % 10 == 0:
            cv2.putText(page, str(mm // 10), (x - round(0.8 * k), y + round(8 * k)), cv2.FONT_HERSHEY_SIMPLEX,
                        2.2 * k / 30.0, 0, thick, cv2.LINE_AA)
    cv2.putText(page, f"{n} mm (cm marks)", (x0 + round((n + 3) * k), y + round(4 * k)),
                cv2.FONT_HERSHEY_SIMPLEX, 2.2 * k / 30.0, 0, thick, cv2.LINE_AA)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(page: np.ndarray, dpi: float) -> bytes:
    """PNG with a ``pHYs`` chunk: pixels per metre = dpi / 0.0254."""
    ok, buf = cv2.imencode(".png", page)
    if not ok:
        raise CalibrationError("cannot encode the board page as PNG")
    data = buf.tobytes()
    ppm = round(dpi / 0.0254)
    phys = _png_chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1))
    end_ihdr = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return data[:end_ihdr] + phys + data[end_ihdr:]


def pdf_bytes(page: np.ndarray, dpi: float) -> bytes:
    """A one-page PDF holding ``page`` as a grey image at ``dpi`` (page size = image size at that DPI)."""
    h, w = page.shape
    pw, ph = w / dpi * 72.0, h / dpi * 72.0
    image = zlib.compress(np.ascontiguousarray(page).tobytes(), 9)
    content = f"q {pw:.4f} 0 0 {ph:.4f} 0 0 cm /Board Do Q".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {pw:.4f} {ph:.4f}] "
         "/Resources << /XObject << /Board 4 0 R >> >> /Contents 5 0 R >>").encode(),
        (f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray "
         f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(image)} >>\nstream\n").encode()
        + image + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_board_page(spec: BoardSpec, out: str | Path, dpi: float = DEFAULT_DPI) -> dict:
    """Write the page as .png or .pdf (by suffix); returns what was written (sizes in mm)."""
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".png", ".pdf"):
        raise CalibrationError(f"--out {out}: the board page is written as .png or .pdf, not {kind or 'no suffix'!r}")
    if not out.parent.is_dir():
        raise CalibrationError(f"--out {out}: folder {out.parent} does not exist")
    page = render_page(spec, dpi)
    data = png_bytes(page, dpi) if kind == ".png" else pdf_bytes(page, dpi)
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise CalibrationError(f"--out {out}: cannot write: {exc}") from None
    h, w = page.shape
    return {"path": str(out), "dpi": dpi, "page_mm": [w / px_per_mm(dpi), h / px_per_mm(dpi)],
            "board_mm": [spec.squares_x * spec.square_mm, spec.squares_y * spec.square_mm],
            "ruler_mm": min(RULER_MM, spec.squares_x * spec.square_mm)}
