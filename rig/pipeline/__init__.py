"""The rig's pipeline: capture -> sync+trigger -> prepare -> batch/infer -> score -> decide -> record, divert.

One module per stage, typed messages between them (items.py), and ``Rig``
(rig.py) that only wires them::

    capture-<cam> ──frames_q──> sync_trigger ──capture_q──> prepare ──views_q──> batch_infer ──score_q──> score
        ──> decide ──> dispatch (divert link, first) ──results──> record
                   └──> record ──bounded queue──> recorder thread ──> event log (recorder.py)
                 ^
    deadline (fail-safe when late, divert retries, forgetting) ─┘

A full queue never blocks capture: frames are dropped and counted at the
camera; an item that cannot be queued is decided at once by the fail-safe.
Every triggered item ends in exactly one decision: from its score, or from the
fail-safe when it is late (``decide_by`` passed), when a stage failed on it, or
when the rig shuts down with it in flight. Decide first, record after: the
DIVERT frame is on the wire before the row is queued, and only the recorder's
own thread touches the disk, so a locked, slow or full disk delays rows, never
decisions.
"""
