"""What the detector learned, kept in the worker's data dir across restarts.

A worker restores the snapshot when it starts, saves a new one every
``snapshot_seconds`` when it has learned something since, and a last one when
it stops. So a restart costs at most the learning of the last interval (tasks
that ended then are not learned again), not the agents' whole history. The
file is the worker's own: it is a pickle and is never read from elsewhere.

Agents whose partitions move to another worker are judged there by their role
and the fleet until that worker has learned them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from intentwatch.models.detection import Detector

__all__ = ["Snapshots"]

log = logging.getLogger(__name__)

FILE_NAME = "learned.snapshot"


class Snapshots:
    """Saves and restores one detector's learned state in ``folder``."""

    def __init__(self, detector: Detector, folder: Path) -> None:
        self.detector = detector
        self.path = folder / FILE_NAME
        self.saved_at: float | None = None
        """Wall-clock time of the last save by this process."""
        self._saved_calls = 0

    def restore(self) -> bool:
        """Load the snapshot if there is one; a missing or unusable one means a cold start."""
        if not self.path.exists():
            return False
        try:
            self.detector.restore(self.path.read_bytes())
        except Exception as error:  # an old, foreign or damaged file: start cold, say why
            log.warning("not restoring %s (%s: %s); starting cold", self.path,
                        type(error).__name__, error)
            return False
        log.info("restored what %d learned calls taught from %s",
                 self.detector.restored_calls, self.path)
        return True

    async def save(self) -> None:
        """Write a snapshot if anything was learned since the last one (atomically)."""
        if self.detector.learned_calls == self._saved_calls:
            return
        calls = self.detector.learned_calls
        data = self.detector.snapshot()  # on the event loop: no call is half-learned
        await asyncio.to_thread(_write_atomically, self.path, data)
        self._saved_calls, self.saved_at = calls, time.time()

    def status(self) -> dict[str, Any]:
        return {
            "restored_calls": self.detector.restored_calls,
            "learned_calls": self.detector.learned_calls,
            "saved_at": self.saved_at,
        }


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
