"""``python -m shoal.gateway [OPTIONS]``: ``shoal gateway``, with its template process
(see :mod:`.template`) started before the command line is even imported: forked from
this process when it is isolated (``python -I``, as a private gateway is), else a new
Python. A private gateway's first run then waits on neither's imports alone.

``python -m shoal.gateway --private FD``: a private gateway (:func:`.private.serve`), its
client's invocations on its stdin, its HTTP server on the listening socket ``FD``, until
its stdin ends; with the defaults and without the command line's parsing (click's
imports: ~10 ms of its client's first run)."""

import sys

from . import core  # noqa: F401  # before the fork: the template shares what it imports
from .template import launch_template_early

if "--no-fork" not in sys.argv:
    launch_template_early()

if sys.argv[1:2] == ["--private"]:
    import logging
    import os

    from .private import serve
    from .template import take_template

    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "WARNING"),
        format="%(levelname)s shoal private gateway %(name)s: %(message)s",
    )
    serve(int(sys.argv[2]), take_template())
else:
    from ..cli import main

    main(["gateway", *sys.argv[1:]])
