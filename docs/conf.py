"""Sphinx configuration of the kalmannet_ctrl documentation (``sphinx-build -W docs <out>``)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import kalmannet_ctrl  # noqa: E402

project = "kalmannet_ctrl"
author = "kalmannet_ctrl developers"
copyright = "2025, kalmannet_ctrl developers"
version = release = kalmannet_ctrl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "generated/*.md", "auto_examples/*.ipynb", "**.py.md5"]
templates_path = ["_templates"]
html_theme = "pydata_sphinx_theme"
html_title = f"kalmannet_ctrl {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# -- API reference: one page per subpackage, listing its __all__ -------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True}
autodoc_typehints = "none"  # the numpydoc sections say the types
# methods without a docstring of their own (e.g. Gymnasium's reset and step) show none
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

#: page name -> (module, title)
API_PAGES = {
    "models": ("kalmannet_ctrl.models", "Models"),
    "estimators": ("kalmannet_ctrl.estimators", "Estimators"),
    "controllers": ("kalmannet_ctrl.controllers", "Controllers"),
    "training": ("kalmannet_ctrl.training", "Training"),
    "rl": ("kalmannet_ctrl.rl", "Reinforcement learning"),
    "bench": ("kalmannet_ctrl.bench", "The compare runner"),
    "envs": ("kalmannet_ctrl.envs", "Environments"),
    "metrics": ("kalmannet_ctrl.metrics", "Metrics"),
    "errors": ("kalmannet_ctrl.errors", "Errors"),
}


def _write_api_pages() -> None:
    """docs/api/<page>.rst from each subpackage's ``__all__`` (so that a new public name gets
    its page without editing the docs)."""
    folder = Path(__file__).parent / "api"
    folder.mkdir(exist_ok=True)
    for page, (module_name, title) in API_PAGES.items():
        module = importlib.import_module(module_name)
        names = sorted(n for n in getattr(module, "__all__", []) if not n.startswith("_"))
        lines = [
            title,
            "=" * len(title),
            "",
            f".. automodule:: {module_name}",
            "   :no-members:",
            "",
            f".. currentmodule:: {module_name}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :nosignatures:",
            "",
            *[f"   {n}" for n in names],
            "",
        ]
        text = "\n".join(lines)
        _write(folder / f"{page}.rst", text)
    index = [
        "API reference",
        "=============",
        "",
        "Generated from the docstrings (numpydoc): one page per subpackage, one per public name.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
        *[f"   {page}" for page in API_PAGES],
        "",
    ]
    _write(folder / "index.rst", "\n".join(index))


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged pages are not rebuilt
        path.write_text(text)


_write_api_pages()

# -- the examples gallery ----------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    # executed when the docs are built: the examples that take seconds; the others (training,
    # a minute or more) are shown with their code only
    "filename_pattern": r"(quickstart|render_cartpole)\.py$",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "show_memory": False,
}


def _skip_tuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields are described in their class's Attributes section already."""
    doc = getattr(obj, "__doc__", None) or ""
    return True if doc.startswith("Alias for field number") else None


def _markdown_headings(app, what, name, obj, options, lines):
    """The environments' docstrings use Gymnasium's "## Section" headings: show them as
    rubrics."""
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("## "):
            lines[i] = " " * (len(line) - len(stripped)) + ".. rubric:: " + stripped[3:]


#: the Shapes sections taken out before numpydoc (which keeps its own sections only), by name
_SHAPES: dict[str, list[str]] = {}


def _is_header(lines: list[str], i: int) -> bool:
    if i + 1 >= len(lines):
        return False
    title, rule = lines[i].strip(), lines[i + 1].strip()
    return bool(title) and len(rule) == len(title) and set(rule) == {"-"}


def _take_shapes(app, what, name, obj, options, lines):
    """Cut the docstring's "Shapes" section out (numpydoc would drop it)."""
    for i in range(len(lines)):
        if lines[i].strip() == "Shapes" and _is_header(lines, i):
            end = i + 2
            while end < len(lines) and not _is_header(lines, end):
                end += 1
            _SHAPES[name] = [line for line in lines[i + 2 : end] if line.strip()]
            del lines[i:end]
            return


def _put_shapes(app, what, name, obj, options, lines):
    """Append the Shapes section, after numpydoc's sections, as a literal block."""
    shapes = _SHAPES.pop(name, None)
    if shapes:
        indent = min(len(line) - len(line.lstrip()) for line in shapes)
        lines += ["", ".. rubric:: Shapes", "", ".. code-block:: text", ""]
        lines += ["    " + line[indent:] for line in shapes] + [""]


def setup(app):
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("autodoc-process-docstring", _take_shapes, priority=100)
    app.connect("autodoc-process-docstring", _markdown_headings)
    app.connect("autodoc-process-docstring", _put_shapes, priority=900)
