"""``python -m shoal.gateway [OPTIONS]``: ``shoal gateway``, with its template process
(see :mod:`.forkserver`) launched before the command line is even imported. A private
gateway's first run waits on the template, not on the gateway's own imports."""

import sys

from .forkserver import launch_template_early

if "--no-fork" not in sys.argv:
    launch_template_early()

from ..cli import main  # noqa: E402

main(["gateway", *sys.argv[1:]])
