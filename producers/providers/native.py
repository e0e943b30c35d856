"""The native reading of Resy search pages (``native/``, Rust), when it is installed.

``scripts/setup.sh`` builds it (``make test`` and ``make up`` run that) and the image builds
it; ``tests/unit/test_native_pages.py`` fails when it is missing. Without it (a plain
``pip install .``), :data:`lib` is ``None`` and every page is read in Python by the typed
reading of :mod:`producers.providers.resy`: the same columns, at more CPU a page
(``python -m bench.producer_bench`` prints both).
"""

from __future__ import annotations

try:
    import drops_native as lib
except ImportError:  # not built here: the Python reading reads every page
    lib = None  # type: ignore[assignment]

READER = "python" if lib is None else "native"

__all__ = ["READER", "lib"]
