"""Captures on disk and ChArUco detection in them.

Layout: ``DIR/CAMERA_NAME/*.png`` (also .jpg/.jpeg/.bmp); files with the same stem
in several camera folders were taken at the same moment. Every problem a technician
can meet here raises a :class:`CalibrationError` that names the camera, the file
and what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..rig.foundation.errors import CalibrationError
from .board import BoardSpec, make_board, make_detector

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_CORNERS = 8  # a view needs this many ChArUco corners to count
MIN_VIEWS = 4  # per camera, for intrinsics


@dataclass
class View:
    camera: str
    moment: str
    path: Path
    corners: np.ndarray  # (N, 2) float64 pixels
    ids: np.ndarray  # (N,) int charuco corner ids
    obj: np.ndarray  # (N, 3) float64 board points, metres
    n_markers: int = 0

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class CameraCaptures:
    name: str
    size: tuple[int, int] | None = None
    images: list[Path] = field(default_factory=list)
    views: list[View] = field(default_factory=list)  # usable views (>= MIN_CORNERS corners)
    markers_seen: int = 0  # images with at least one marker of the board's dictionary
    corners_seen: int = 0  # images with at least one ChArUco corner
    max_marker_id: int = -1
    sparse: list[str] = field(default_factory=list)  # moments with too few corners


def list_captures(captures: Path, cameras: list[str] | None = None) -> dict[str, list[Path]]:
    """Image paths by camera; checks the folders exist and hold images."""
    captures = Path(captures)
    if not captures.is_dir():
        raise CalibrationError(f"captures folder {captures} does not exist: it must hold one "
                               "folder per camera (DIR/CAMERA_NAME/*.png)")
    # A report written inside the captures folder (it has index.html) is not a camera.
    found = {p.name: p for p in sorted(captures.iterdir())
             if p.is_dir() and not p.name.startswith(".") and not (p / "index.html").exists()}
    names = list(cameras) if cameras else sorted(found)
    if not names:
        raise CalibrationError(f"{captures} has no camera folders: put each camera's images in "
                               f"{captures}/CAMERA_NAME/ (e.g. {captures}/top/0001.png)")
    out: dict[str, list[Path]] = {}
    for name in names:
        folder = captures / name
        if name not in found:
            raise CalibrationError(
                f"camera {name!r}: its folder {folder} is missing — capture images with {name} "
                f"into {folder}/ (same file name in every camera's folder for the same moment), "
                f"or leave {name} out of --cameras (folders found: {sorted(found) or 'none'})")
        imgs = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not imgs:
            raise CalibrationError(f"camera {name!r}: {folder} holds no images "
                                   f"({', '.join(IMAGE_EXTS)}) — capture views of the board with {name}")
        out[name] = imgs
    return out


def read_grey(path: Path, camera: str) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CalibrationError(f"camera {camera!r}: cannot read image {path} — the file is damaged "
                               "or not an image: re-export it as PNG, or delete it and calibrate again")
    if img.dtype == np.uint16:
        img = (img / 257.0).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return img


def detect_view(detector, board, grey: np.ndarray):
    """(corners (N,2), ids (N,), obj (N,3), marker ids (M,)) of one image."""
    ch_corners, ch_ids, _m_corners, m_ids = detector.detectBoard(grey)
    marker_ids = np.zeros(0, int) if m_ids is None else m_ids.ravel().astype(int)
    if ch_ids is None or len(ch_ids) == 0:
        return np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 3)), marker_ids
    obj, img = board.matchImagePoints(ch_corners, ch_ids)
    return (img.reshape(-1, 2).astype(np.float64), ch_ids.ravel().astype(int),
            obj.reshape(-1, 3).astype(np.float64), marker_ids)


def detect_all(captures: Path, spec: BoardSpec, cameras: list[str] | None = None,
               progress: bool = True) -> dict[str, CameraCaptures]:
    """Detect the board in every image; with a progress bar."""
    from tqdm import tqdm

    images = list_captures(captures, cameras)
    board = make_board(spec)
    detector = make_detector(board)
    n_markers = len(board.getIds())
    result = {name: CameraCaptures(name=name, images=paths) for name, paths in images.items()}
    total = sum(len(p) for p in images.values())
    with tqdm(total=total, desc="detecting board", unit="img", disable=not progress) as bar:
        for name, paths in images.items():
            cc = result[name]
            for path in paths:
                grey = read_grey(path, name)
                size = (grey.shape[1], grey.shape[0])
                if cc.size is None:
                    cc.size = size
                elif cc.size != size:
                    raise CalibrationError(
                        f"camera {name!r}: {path.name} is {size[0]}x{size[1]} but earlier images are "
                        f"{cc.size[0]}x{cc.size[1]} — one camera's captures must share one resolution")
                corners, ids, obj, marker_ids = detect_view(detector, board, grey)
                if marker_ids.size:
                    cc.markers_seen += 1
                    cc.max_marker_id = max(cc.max_marker_id, int(marker_ids.max()))
                if ids.size:
                    cc.corners_seen += 1
                if ids.size >= MIN_CORNERS:
                    cc.views.append(View(name, path.stem, path, corners, ids, obj, int(marker_ids.size)))
                elif marker_ids.size:
                    cc.sparse.append(path.stem)
                bar.update(1)
                bar.set_postfix_str(f"{name}: {len(cc.views)} views")
    for cc in result.values():
        _check_board_matches(cc, spec, n_markers, captures)
    return result


def _diagnose_board(spec: BoardSpec, paths: list[Path], camera: str) -> str:
    """What the images look like instead: another dictionary or the other legacy layout."""
    from dataclasses import replace

    sample = paths[:: max(1, len(paths) // 6)][:6]
    greys = [read_grey(p, camera) for p in sample]
    alt = replace(spec, legacy_pattern=not spec.legacy_pattern)
    b, d = make_board(alt), make_detector(make_board(alt))
    if sum(detect_view(d, b, g)[1].size for g in greys) >= MIN_CORNERS:
        return (f"the images match legacy_pattern: {str(alt.legacy_pattern).lower()} — "
                "set it in the board YAML")
    for name in ("DICT_4X4_50", "DICT_4X4_100", "DICT_4X4_250", "DICT_5X5_50", "DICT_5X5_100",
                 "DICT_5X5_250", "DICT_6X6_50", "DICT_6X6_250", "DICT_7X7_50", "DICT_ARUCO_ORIGINAL"):
        if name == spec.dictionary:
            continue
        ident = getattr(cv2.aruco, name)
        det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(ident),
                                      cv2.aruco.DetectorParameters())
        hits = sum(0 if (ids := det.detectMarkers(g)[1]) is None else len(ids) for g in greys)
        if hits >= 4:
            return f"the images show {name} markers — set dictionary: {name} in the board YAML"
    return ("check squares_x, squares_y, dictionary and legacy_pattern against the printed board, "
            "and that the board is in focus and fully lit")


def _check_board_matches(cc: CameraCaptures, spec: BoardSpec, n_markers: int, captures: Path) -> None:
    name = cc.name
    if cc.max_marker_id >= n_markers:
        raise CalibrationError(
            f"camera {name!r}: the board in the images has marker id {cc.max_marker_id} but the "
            f"board YAML ({spec.describe()}) has ids 0..{n_markers - 1} — the printed board is "
            "larger: fix squares_x/squares_y in the board YAML")
    if cc.corners_seen == 0:
        hint = _diagnose_board(spec, cc.images, name)
        what = ("markers were found but no ChArUco corner" if cc.markers_seen
                else f"no {spec.dictionary} marker was found")
        raise CalibrationError(
            f"camera {name!r}: the board does not match the board YAML ({spec.describe()}): "
            f"{what} in {len(cc.images)} image(s) in {captures / name} — {hint}")


def check_views(dets: dict[str, CameraCaptures], min_views: int = MIN_VIEWS) -> None:
    for name, cc in dets.items():
        if len(cc.views) < min_views:
            raise CalibrationError(
                f"camera {name!r}: only {len(cc.views)} usable view(s) of the board (each needs "
                f">= {MIN_CORNERS} corners; {len(cc.images)} image(s) read) — at least {min_views} "
                f"are needed and 15-30 are recommended: capture more views with the board filling "
                f"different parts of {name}'s image, some tilted by 20-40 degrees")


def camera_graph(dets: dict[str, CameraCaptures]) -> dict[str, dict[str, list[str]]]:
    """Shared moments between each pair of cameras."""
    moments = {n: {v.moment for v in cc.views} for n, cc in dets.items()}
    return {a: {b: sorted(moments[a] & moments[b]) for b in dets if b != a} for a in dets}


def check_connected(dets: dict[str, CameraCaptures], reference: str) -> None:
    graph = camera_graph(dets)
    seen, stack = {reference}, [reference]
    while stack:
        a = stack.pop()
        for b, shared in graph[a].items():
            if shared and b not in seen:
                seen.add(b)
                stack.append(b)
    missing = sorted(set(dets) - seen)
    if missing:
        others = sorted(seen)
        lonely = [m for m in missing if not any(graph[m][b] for b in graph[m])]
        name = (lonely or missing)[0]
        raise CalibrationError(
            f"camera {name!r} never sees the board at the same moment as "
            f"{' or '.join(others)}, so its position relative to them cannot be solved — capture "
            f"moments with the board visible to {name} and at least one of {', '.join(others)} "
            "(save them under the same file name in both folders)"
            + (f"; also not connected: {', '.join(m for m in missing if m != name)}"
               if len(missing) > 1 else ""))
