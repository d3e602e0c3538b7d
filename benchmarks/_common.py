"""What the benchmark scripts share: the command line's common options and the machine line."""

from __future__ import annotations

import argparse
import platform

import torch


def make_parser(
    doc: str | None, *, threads: int = 1, steps: tuple[int, str] | None = None
) -> argparse.ArgumentParser:
    """A parser showing the script's docstring, with ``--threads`` (torch intra-op threads) and,
    given ``steps = (default, what they are)``, ``--steps``."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=threads, help=f"torch intra-op threads (default {threads})"
    )
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps[0], help=steps[1])
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and apply ``--threads``."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def machine(threads: int) -> str:
    """``torch <version>, <n> thread(s), <processor>``, for a table's heading."""
    processor = platform.processor() or platform.machine()
    return f"torch {torch.__version__}, {threads} thread(s), {processor}"
