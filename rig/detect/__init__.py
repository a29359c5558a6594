"""Runtime-side judgement, one concern a module.

- card.py: the model card (format, required keys, older cards);
- gallery.py: the versioned gallery of pristine references and its identification index;
- anomaly.py, fusion.py, scoring.py: identify the product, anomaly against its references,
  fuse into P(damage) -- ``Scorer.load(model_dir)`` is what the rig and ``rig eval`` both use,
  so an evaluation measures exactly the runtime path;
- threshold.py: the operating threshold from a false-positive budget;
- enroll.py: gallery maintenance without retraining.

The CPU reference preprocessing of a view lives in rig/preprocess/reference.py.
Nothing is re-exported here: import from the module.
"""
