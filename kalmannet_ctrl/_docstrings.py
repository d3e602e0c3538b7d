"""Docstring fragments shared by several callables, filled in at import time.

A docstring names a fragment with a placeholder ``%(name)s`` standing alone on its line (the
convention of SciPy's ``doccer`` and Matplotlib's ``_docstring``); :func:`fill` replaces it with the
fragment, every line indented as the placeholder is. Only placeholders of registered names are
touched, so other ``%`` signs in a docstring stay as they are. The filled docstring is what
``help()``, IDEs and Sphinx show.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)


def fill(**fragments: str) -> Callable[[T], T]:
    """Decorator that fills the ``%(name)s`` placeholders of a docstring with ``fragments``.

    Parameters
    ----------
    **fragments : str
        Text per placeholder name. Common leading white space is removed and each line is
        indented as its placeholder.

    Returns
    -------
    callable
        A decorator returning the function or class it is given, its ``__doc__`` filled.

    Raises
    ------
    KeyError
        If the docstring names a placeholder that ``fragments`` does not hold, or a fragment is
        never used (both would be a typo).
    """
    texts = {name: textwrap.dedent(text).strip("\n") for name, text in fragments.items()}

    def decorate(obj: T) -> T:
        doc = obj.__doc__ or ""
        used: set[str] = set()

        def replace(match: re.Match[str]) -> str:
            name = match.group("name")
            if name not in texts:
                raise KeyError(f"{obj!r}: no docstring fragment named {name!r}")
            used.add(name)
            return textwrap.indent(texts[name], match.group("indent"))

        filled = _PLACEHOLDER.sub(replace, doc)
        unused = sorted(set(texts) - used)
        if unused:
            raise KeyError(f"{obj!r}: docstring fragment(s) {unused} have no placeholder")
        obj.__doc__ = filled
        return obj

    return decorate
