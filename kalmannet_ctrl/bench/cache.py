"""On-disk caches of the compare runner: trained artefacts and finished cells.

Every file is written atomically (:mod:`kalmannet_ctrl._io`: a temporary file in the same folder,
then a rename), so an
interrupted run never leaves a half-written entry; an entry that cannot be read back (truncated,
foreign or from another version) is rebuilt rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ArtifactCache", "stable_hash"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hash of a JSON-able object, stable across runs and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class ArtifactCache:
    """Trained artefacts on disk, one folder per (scenario, method, config, seed).

    Parameters
    ----------
    root : path or None
        The cache folder; ``None`` keeps nothing (every artefact is rebuilt).
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root)

    def folder(self, *parts: str) -> Path | None:
        """The folder of one artefact (created), or None without a cache root."""
        if self.root is None:
            return None
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_or_build(
        self,
        parts: tuple[str, ...],
        build: Callable[[], T],
        save: Callable[[T, Path], None],
        load: Callable[[Path], T],
    ) -> tuple[T, bool]:
        """The artefact under ``parts``: loaded if a readable copy exists, else built and saved.

        ``save(obj, folder)`` must write atomically; ``load(folder)`` must raise on a missing or
        unreadable artefact. Returns ``(artefact, loaded_from_cache)``.
        """
        folder = self.folder(*parts)
        if folder is not None and any(folder.iterdir()):
            try:
                return load(folder), True
            except Exception as exc:  # corrupt or foreign entry: rebuild, never trust
                log.warning("rebuilding the cache entry %s: %s", folder, exc)
        obj = build()
        if folder is not None:
            save(obj, folder)
        return obj, False
