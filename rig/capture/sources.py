"""Open the configured cameras: each ``source`` backend opens its cameras as one group.

A group is what one backend opened: its cameras, and what they share (the
simulated belt's clock, the ground truth a simulator knows). The rig sees
only :class:`CaptureSources`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..foundation.errors import ConfigError
from . import CAPTURE
from .base import CaptureBackend


def _nothing() -> None:
    return None


@dataclass
class SourceGroup:
    """The cameras one capture backend opened (by camera name) and the hooks they share."""

    cameras: dict[str, CaptureBackend]
    begin: Callable[[], None] = _nothing  # called as the rig starts (a simulated belt starts its clock)
    close: Callable[[], None] = _nothing
    truth: Callable[[Any], dict | None] | None = None  # ground truth of a captured item (simulator only)
    end_time: Callable[[], float | None] = _nothing  # time after which no item comes (None: endless)
    state: Any = None  # what the backend shares between its cameras (the simulated belt)


@dataclass
class CaptureSources:
    groups: dict[str, SourceGroup]
    cameras: list[CaptureBackend] = field(default_factory=list)  # in config order

    def begin(self) -> None:
        for g in self.groups.values():
            g.begin()

    def close(self) -> None:
        for g in self.groups.values():
            g.close()

    @property
    def truth_fn(self) -> Callable[[Any], dict | None] | None:
        return next((g.truth for g in self.groups.values() if g.truth is not None), None)

    def end_time(self) -> float | None:
        """When every finite source has shown its last item (None when all are endless)."""
        ends = [e for e in (g.end_time() for g in self.groups.values()) if e is not None]
        return max(ends) if ends else None


def open_sources(cfg, calib) -> CaptureSources:
    """The cameras of ``cfg`` (a RigConfig), opened by their ``source`` backends, in config order."""
    by_source: dict[str, list] = {}
    for i, c in enumerate(cfg.cameras):
        by_source.setdefault(c.source, []).append((i, c))
    groups: dict[str, SourceGroup] = {}
    try:
        for source, cams in by_source.items():
            try:
                opener = CAPTURE.get(source)
            except KeyError as exc:
                raise ConfigError(str(exc.args[0])) from None
            groups[source] = opener(cfg, calib, cams)
    except BaseException:
        for g in groups.values():
            g.close()
        raise
    cameras = [groups[c.source].cameras[c.name] for c in cfg.cameras]
    return CaptureSources(groups, cameras)
