"""The benchmarks' progress bar (scripts/bench_*.py import it; the repository root is on their
path)."""

from __future__ import annotations

import sys


def progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""
    if not sys.stderr.isatty() and done < total:
        return
    width = 30
    filled = width * done // max(total, 1)
    print(
        f"\r  {label:<22} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
        end="",
        file=sys.stderr,
        flush=True,
    )
    if done >= total:
        print(file=sys.stderr)
