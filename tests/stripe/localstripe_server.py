"""Run localstripe's aiohttp app on 127.0.0.1 and a free port, printing the port on the first line of stdout.

The localstripe CLI listens on all interfaces and pickles its whole store to a fixed /tmp/localstripe.pickle after
every write (``Store.dump_to_disk``, called from ``__setitem__``/``__delitem__`` and a middleware), which would be
slow and shared between concurrent runs. Here the store stays in this process's memory: the instance's
``dump_to_disk`` is replaced with a no-op, and nothing is ever loaded from disk (``try_load_from_disk`` is only
called by the CLI's ``start()``).
"""

from __future__ import annotations

import socket

from aiohttp import web
from localstripe import resources, server


def main() -> None:
    resources.store.dump_to_disk = lambda: None  # type: ignore[method-assign]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # connections queue from now on, before the app starts serving
    print(listener.getsockname()[1], flush=True)
    web.run_app(server.app, sock=listener, print=None, access_log=None)


if __name__ == "__main__":
    main()
