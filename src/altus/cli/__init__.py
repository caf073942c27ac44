"""The ``altus`` command line: thin command groups over the library.

``altus.cli.main`` holds the entry point and the one place that turns errors
into a single line; each command group lives in its own module and is imported
only when it is used.
"""

from __future__ import annotations

__all__: list[str] = []
