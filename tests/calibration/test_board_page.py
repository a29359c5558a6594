"""`rig calibrate board`: the printed board is at true scale (PNG with its DPI, PDF with its page size)."""

from __future__ import annotations

import re
import struct
import zlib

import cv2
import numpy as np
import pytest
from damage_rig.calibration.board import (
    DEFAULT_BOARD,
    BoardSpec,
    make_board,
    make_detector,
    save_board,
)
from damage_rig.rig.cli import main


def _square_px(grey: np.ndarray, spec: BoardSpec) -> float:
    board = make_board(spec)
    corners, ids, _, _ = make_detector(board).detectBoard(grey)
    assert ids is not None and len(ids) == (spec.squares_x - 1) * (spec.squares_y - 1)
    pts = {int(i): c for i, c in zip(ids.ravel(), corners.reshape(-1, 2))}
    nx = spec.squares_x - 1
    # corner ids run along x: neighbours i, i+1 in a row are one square apart
    d = [np.linalg.norm(pts[i + 1] - pts[i]) for i in pts if (i + 1) in pts and (i + 1) % nx]
    return float(np.median(d))


def test_png_is_true_scale_with_its_dpi(tmp_path, capsys):
    out = tmp_path / "board.png"
    assert main(["calibrate", "board", "--out", str(out), "--dpi", "100"]) == 0
    assert "board YAML for this print" in capsys.readouterr().out  # the default board is spelled out
    data = out.read_bytes()
    i = data.index(b"pHYs")
    ppm_x, ppm_y, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    assert unit == 1 and ppm_x == ppm_y == round(100 / 0.0254)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    mm = _square_px(grey, DEFAULT_BOARD) / (100 / 25.4)
    assert mm == pytest.approx(DEFAULT_BOARD.square_mm, rel=0.01)


def test_pdf_page_size_gives_true_scale_for_a_given_board(tmp_path, capsys):
    spec = BoardSpec(squares_x=5, squares_y=4, square_mm=30.0, marker_mm=22.0, dictionary="DICT_4X4_50")
    save_board(spec, tmp_path / "b.yaml")
    out = tmp_path / "board.pdf"
    assert main(["calibrate", "board", "--board", str(tmp_path / "b.yaml"), "--out", str(out), "--dpi", "150"]) == 0
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    box = [float(v) for v in re.search(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf).groups()]
    w, h = (int(v) for v in re.search(rb"/Width (\d+) /Height (\d+)", pdf).groups())
    start = pdf.index(b"stream\n") + len(b"stream\n")
    n = int(re.search(rb"/Length (\d+) >>\nstream", pdf).group(1))
    grey = np.frombuffer(zlib.decompress(pdf[start:start + n]), np.uint8).reshape(h, w)
    pt_per_px = box[0] / w
    assert box[1] / h == pytest.approx(pt_per_px)
    square_mm = _square_px(grey, spec) * pt_per_px / 72 * 25.4
    assert square_mm == pytest.approx(30.0, rel=0.01)
    # the xref offsets point at the objects (a PDF reader needs them)
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split()[0])
    offsets = [int(line[:10]) for line in pdf[xref:].split(b"\n")[3:8]]
    assert [pdf[o:o + 7] for o in offsets] == [f"{k} 0 obj".encode() for k in range(1, 6)]


@pytest.mark.parametrize("args, message", [
    (["--out", "board.jpg"], ".png or .pdf"),
    ([], "needs --out"),
    (["--out", "nowhere/board.png"], "does not exist"),
    (["--out", "b.png", "--dpi", "5"], "DPI"),
])
def test_bad_board_page_requests_fail_clearly(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "board", *args]) == 1
    assert message in capsys.readouterr().err
