"""``python -m shoal``: the ``shoal`` command line."""

from .cli import main

main()
