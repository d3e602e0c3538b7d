"""The shared docstring fragments: placeholders filled with the right indentation, typos caught."""

import inspect

import pytest

from kalmannet_ctrl._docstrings import fill

COMMON = """
dtype : torch.dtype
    The dtype.
"""


def test_fill_indents_the_fragment_as_its_placeholder_and_leaves_other_percent_signs():
    @fill(common=COMMON)
    def f():
        """Summary, 100 % of it.

        Parameters
        ----------
        x : int
            A number.
        %(common)s
        """

    lines = inspect.cleandoc(f.__doc__).splitlines()  # as help() shows it
    assert "Summary, 100 % of it." in lines[0]
    i = lines.index("dtype : torch.dtype")
    assert lines[i + 1] == "    The dtype."
    assert "%(common)s" not in f.__doc__


def test_fill_rejects_an_unknown_placeholder_and_an_unused_fragment():
    with pytest.raises(KeyError, match="typo"):

        @fill(common=COMMON)
        def g():
            """%(typo)s"""

    with pytest.raises(KeyError, match="common"):

        @fill(common=COMMON)
        def h():
            """No placeholder."""
