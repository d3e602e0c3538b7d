"""Atomic file writes: a temporary file in the target's folder, then a rename.

Every file the library writes (checkpoints, RL policies and their sidecars, cached artefacts,
results tables, plots) goes through :func:`atomic_write`, so an interrupted write never leaves a
truncated file under the final name: readers see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block ends normally.

    For writers that take a file name rather than a file object (``torch.save``,
    Stable-Baselines3's ``model.save``). The parent folder is created; the file is made readable
    by everyone (0644), as results are meant to be shared; on an exception the temporary file is
    removed and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        The final file name.
    suffix : str
        Ending of the temporary name (some writers pick the format from it, e.g. ``".zip"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates the file private to its owner
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """An open file whose content replaces ``path`` atomically when the block ends normally.

    Parameters
    ----------
    path : path-like
        The final file name.
    mode : {"w", "wb"}
        Text (UTF-8) or binary.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.md"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write("| a |\\n")
    >>> target.read_text()
    '| a |\\n'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', found {mode!r}")
    with atomic_path(path) as tmp:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path) as fh:
        fh.write(text)
