"""``python -m altus``: the ``altus`` command, for when the script is not on PATH."""

from altus.cli.main import main

main()
