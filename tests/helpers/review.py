"""A state directory with known items for the review tests."""

from __future__ import annotations

import time

from damage_rig.rig.events import EventLog

from tests.helpers.events import make_record


def make_state(state, n: int = 8) -> list[str]:
    """Items it000000..: even ids diverted (score 0.8 + i/100), odd ones passed; returns the diverted ids."""
    diverted = []
    t0 = time.time() - 600  # recent: retention (30 days) must not remove the crops
    with EventLog(state) as log:
        for i in range(n):
            dec = "divert" if i % 2 == 0 else "pass"
            log.record(make_record(i, dec, t0=t0, score=(0.8 + i / 100) if dec == "divert" else 0.1 + i / 100))
            if dec == "divert":
                diverted.append(f"it{i:06d}")
    return diverted
