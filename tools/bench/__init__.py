"""`rig bench`: where every millisecond of an item's journey goes, and how much headroom is left.

The pieces, one concern per file:

- ``driver``: runs the real pipeline (``open_rig``, the code `rig run` runs) on
  the simulated belt at a chosen item rate and collects per-stage percentiles,
  end-to-end latency, slack at the gate, drops; times the model alone.
- ``sweep``: finds the highest item rate with no late decision by bounded
  bisection over any ``measure(rate)`` function.
- ``trace``: turns the pipeline's spans into a Chrome trace (traceEvents JSON).
- ``plot``: a PNG with a latency histogram and CDF per stage and the sweep curve.
- ``nvtx``: NVTX ranges around the GPU path when an NVTX library is present.
"""
