"""The model card: the file that says what a model directory holds and how to run it.

``model_card.yaml`` (format ``damage-rig-model/1``) names the ONNX file, the
input (size, channels, normalisation, depth encoding), the damage types, the
fusion, the threshold and the FPR budget it was set for, the version and the
hashes of the files. ``read_card`` checks it. There is one format so far: a new
one gets its migration here, so the rest of the rig reads one shape.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..foundation.errors import ModelError
from ..foundation.hashing import file_sha256

CARD_NAME = "model_card.yaml"
CARD_FORMAT = "damage-rig-model/1"
REQUIRED = ("onnx", "input", "damage_types", "fusion", "threshold")


def read_card(model_dir: str | Path) -> dict:
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ModelError(f"{model_dir}: not a model directory (no {CARD_NAME}); "
                         "train one with 'rig train' or use the shipped model")
    try:
        card = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ModelError(f"{path}: not a {CARD_FORMAT} model card")
    for key in REQUIRED:
        if key not in card:
            raise ModelError(f"{path}: model card lacks {key!r}")
    return card


def verify_model_files(model_dir: str | Path, card: dict) -> None:
    """Every file the card lists under ``files`` must exist and have that SHA-256; the ONNX file must
    be listed. A mismatch is a ModelError naming the file (a tampered or half-copied model never runs)."""
    model_dir = Path(model_dir)
    files = card.get("files")
    onnx_name = card["onnx"]["file"]
    if not isinstance(files, dict) or onnx_name not in files:
        raise ModelError(f"{model_dir / CARD_NAME}: the card lists no SHA-256 for {onnx_name} (section "
                         "'files'), so the model cannot be verified; re-export it with 'rig train'")
    for name, want in files.items():
        path = (model_dir / str(name)).resolve()
        if model_dir.resolve() not in path.parents:
            raise ModelError(f"{model_dir / CARD_NAME}: file {name!r} lies outside the model folder")
        try:
            got = file_sha256(path)
        except OSError as exc:
            raise ModelError(f"{path}: listed in the model card but unreadable: {exc}") from None
        if got != str(want).lower():
            raise ModelError(f"{path}: SHA-256 {got[:16]}... does not match the model card's {str(want)[:16]}... "
                             "(the file was changed or damaged after the model was made); restore it from the "
                             "model's release")
