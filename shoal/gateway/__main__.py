"""``python -m shoal.gateway [OPTIONS]``: ``shoal gateway``, with its template process
(see :mod:`.forkserver`) started before the command line is even imported: forked from
this process when it is isolated (``python -I``, as a private gateway is), else a new
Python. A private gateway's first run then waits on neither's imports alone.

``python -m shoal.gateway --private FD``: a private gateway (:mod:`.private`) serving on the
listening socket ``FD`` until its stdin ends, with the defaults and without the command
line's parsing (click's imports: ~10 ms of its client's first run)."""

import sys

from .forkserver import launch_template_early

if "--no-fork" not in sys.argv:
    launch_template_early()

if sys.argv[1:2] == ["--private"]:
    import logging
    import os

    from .forkserver import take_template
    from .server import serve

    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "WARNING"),
        format="%(levelname)s shoal private gateway %(name)s: %(message)s",
    )
    serve(fd=int(sys.argv[2]), exit_with_stdin=True, template=take_template())
else:
    from ..cli import main

    main(["gateway", *sys.argv[1:]])
