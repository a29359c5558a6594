"""Runtime-side judgement: identify the product, anomaly against its references, fuse, decide.

``Scorer.load(model_dir)`` is what the rig and ``rig eval`` both use, so an
evaluation measures exactly the runtime path (ONNX Runtime or TensorRT for the
network, numpy for the gallery look-ups and the fusion).
Gallery maintenance without retraining: ``enroll``, ``list_versions``,
``rollback``.
"""

from .enroll import enroll, enroll_dataset
from .gallery import Gallery, current_version, list_versions, load_gallery, rollback
from .scorer import ItemScore, Scorer, ViewScore, read_card
from .threshold import fpr_at, threshold_at_fpr

__all__ = [
           "Gallery",
           "ItemScore",
           "Scorer",
           "ViewScore",
           "current_version",
           "enroll",
           "enroll_dataset",
           "fpr_at",
           "list_versions",
           "load_gallery",
           "read_card",
           "rollback",
           "threshold_at_fpr",
]
