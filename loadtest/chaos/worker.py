"""One engine worker for a chaos rehearsal: ``python -m loadtest.chaos.worker`` with ``DATABASE_URL`` and ``SURGE_*``.

The same worker that `surge serve --workers N` runs (``engine.serve.run_worker``, SO_REUSEPORT on one port), but
started and supervised by the rehearsal itself, so that it can SIGKILL one and start it again while the others go
on serving: `surge serve` does not restart a dead worker, a process supervisor does. It logs the engine's
"listening on" line whatever the log level, which is how the rehearsal knows this very process is ready.
"""

from __future__ import annotations

import logging
import os
import sys

from engine.serve import run_worker
from engine.settings import ConfigError, load_settings

READY_LINE = "listening on http://"


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    url = settings.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("loadtest.chaos.worker needs DATABASE_URL", file=sys.stderr)
        return 2
    logging.getLogger("engine.serve").setLevel(logging.INFO)  # the ready line, also at SURGE_LOG_LEVEL=WARNING
    run_worker(settings, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
