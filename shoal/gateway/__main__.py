"""``python -m shoal.gateway [OPTIONS]``: ``shoal gateway``, with its template process
(see :mod:`.forkserver`) started before the command line is even imported: forked from
this process when it is isolated (``python -I``, as a private gateway is), else a new
Python. A private gateway's first run then waits on neither's imports alone."""

import sys

from .forkserver import launch_template_early

if "--no-fork" not in sys.argv:
    launch_template_early()

from ..cli import main  # noqa: E402

main(["gateway", *sys.argv[1:]])
