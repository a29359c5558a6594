"""Damage models: architecture, training, ONNX export, gallery, scoring.

``SHIPPED_DIR`` holds the model that ships with the repository (reproduced by
the command in its model card).
"""

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
