"""The ChArUco board: its YAML description, the OpenCV board and detector.

Board YAML (lengths in millimetres)::

    type: charuco
    squares_x: 9          # squares along the board's x axis
    squares_y: 6
    square_mm: 50.0
    marker_mm: 37.0
    dictionary: DICT_5X5_100
    legacy_pattern: false # OpenCV < 4.6 layout for boards with an even number of rows
    thickness_mm: 0.0     # optional: board surface height above the belt when it lies on it

The board frame is OpenCV's: origin at the board's outer top-left corner, x along
``squares_x``, y along ``squares_y``, z into the board; units metres.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..rig.foundation.errors import CalibrationError

# ChArUco corners are shifted by +0.5 px in OpenCV 4.7-4.13 (opencv/opencv#25539).
MIN_OPENCV = (4, 14)


def check_opencv() -> None:
    parts = []
    for p in cv2.__version__.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    if tuple(parts) < MIN_OPENCV:
        raise CalibrationError(
            f"OpenCV {cv2.__version__} shifts ChArUco corners by +0.5 px (opencv/opencv#25539): "
            "install opencv-python-headless>=4.14")


@dataclass(frozen=True)
class BoardSpec:
    squares_x: int
    squares_y: int
    square_mm: float
    marker_mm: float
    dictionary: str = "DICT_5X5_100"
    legacy_pattern: bool = False
    thickness_mm: float = 0.0
    type: str = "charuco"

    @property
    def square_m(self) -> float:
        return self.square_mm / 1000.0

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"type": d.pop("type"), **d}

    def describe(self) -> str:
        return (f"{self.squares_x}x{self.squares_y} squares of {self.square_mm:g} mm, markers "
                f"{self.marker_mm:g} mm, {self.dictionary}, legacy_pattern={self.legacy_pattern}")


#: the board `rig calibrate board` prints when no --board is given (docs/calibration.md); 400 x 280 mm, a 430 x 340 mm page
DEFAULT_BOARD = BoardSpec(squares_x=10, squares_y=7, square_mm=40.0, marker_mm=30.0, dictionary="DICT_5X5_100")


def _dictionary(name: str):
    ident = getattr(cv2.aruco, name, None)
    if not name.startswith("DICT_") or not isinstance(ident, int):
        known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))
        raise CalibrationError(f"unknown ArUco dictionary {name!r}; one of: {', '.join(known)}")
    return cv2.aruco.getPredefinedDictionary(ident)


def board_from_dict(data, source: str = "<board>") -> BoardSpec:
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: expected a mapping with type: charuco")
    known = {"type", "squares_x", "squares_y", "square_mm", "marker_mm", "dictionary",
             "legacy_pattern", "thickness_mm"}
    extra = sorted(set(data) - known)
    if extra:
        raise CalibrationError(f"{source}: unknown key(s) {extra}; expected {sorted(known)}")
    if data.get("type", "charuco") != "charuco":
        raise CalibrationError(f"{source}: type must be 'charuco', got {data.get('type')!r}")
    for key in ("squares_x", "squares_y", "square_mm", "marker_mm"):
        if key not in data:
            raise CalibrationError(f"{source}: missing key {key!r}")
    try:
        spec = BoardSpec(squares_x=int(data["squares_x"]), squares_y=int(data["squares_y"]),
                         square_mm=float(data["square_mm"]), marker_mm=float(data["marker_mm"]),
                         dictionary=str(data.get("dictionary", "DICT_5X5_100")),
                         legacy_pattern=bool(data.get("legacy_pattern", False)),
                         thickness_mm=float(data.get("thickness_mm", 0.0)))
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{source}: {exc}") from None
    if spec.squares_x < 3 or spec.squares_y < 3:
        raise CalibrationError(f"{source}: squares_x and squares_y must be >= 3")
    if not 0 < spec.marker_mm < spec.square_mm:
        raise CalibrationError(f"{source}: marker_mm must be between 0 and square_mm "
                               f"({spec.marker_mm} vs {spec.square_mm})")
    d = _dictionary(spec.dictionary)
    n_markers = spec.squares_x * spec.squares_y // 2
    if n_markers > d.bytesList.shape[0]:
        raise CalibrationError(f"{source}: a {spec.squares_x}x{spec.squares_y} board needs "
                               f"{n_markers} markers but {spec.dictionary} has {d.bytesList.shape[0]}")
    return spec


def load_board(path) -> BoardSpec:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"board file {path} does not exist (see docs/calibration.md for the format)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML: {exc}") from None
    return board_from_dict(data, str(path))


def save_board(spec: BoardSpec, path) -> None:
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))


def make_board(spec: BoardSpec):
    board = cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_m,
                                   spec.marker_mm / 1000.0, _dictionary(spec.dictionary))
    board.setLegacyPattern(spec.legacy_pattern)
    return board


def make_detector(board):
    check_opencv()
    dp = cv2.aruco.DetectorParameters()
    dp.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    cp = cv2.aruco.CharucoParameters()
    cp.tryRefineMarkers = True
    return cv2.aruco.CharucoDetector(board, cp, dp)


def board_texture(spec: BoardSpec, px_per_mm: float) -> np.ndarray:
    """The board printed at ``px_per_mm`` (uint8, white border-less). Texture pixel
    centre (i, j) is at board point ((i + 0.5) / px_per_mm, (j + 0.5) / px_per_mm) mm."""
    w = round(spec.squares_x * spec.square_mm * px_per_mm)
    h = round(spec.squares_y * spec.square_mm * px_per_mm)
    return make_board(spec).generateImage((w, h), marginSize=0, borderBits=1)
