"""`surge serve`: the database (embedded unless ``DATABASE_URL``), then one or more HTTP worker processes.

With ``--workers N`` the parent owns the embedded database and N children share the port with SO_REUSEPORT; every
guarantee is enforced in PostgreSQL, so it holds across them. SIGINT/SIGTERM stop the workers, then the database.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import multiprocessing
import os
import signal
from types import FrameType

import uvloop
from aiohttp import web

from adapters.registry import check_configuration
from engine.app import create_app
from engine.bootstrap import bootstrap
from engine.database import create_pool, database_url, migrate, session_url
from engine.settings import ConfigError, Settings

_logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def serve(settings: Settings) -> int:
    problems = check_configuration(settings.processor_specs(), os.environ)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    with database_url(settings) as url:
        asyncio.run(_prepare(session_url(settings, url), embedded=not settings.database_url))
        if settings.workers == 1:
            run_worker(settings, url)
            return 0
        return _run_workers(settings, url)


async def _prepare(url: str, *, embedded: bool) -> None:
    pool = await create_pool(url, size_max=2, size_min=1)
    try:
        async with pool.acquire() as connection:
            for applied in await migrate(connection):
                _logger.info("applied migration %04d_%s", applied.version, applied.name)
            keys = await bootstrap(connection, create_demo_campaign=embedded)
    finally:
        await pool.close()
    if keys:
        lines = [f"  {role.value:<8} {secret}" for role, secret in keys.items()]
        print(
            "\nNew database: created one API key per role. They are shown only this once; store them now.\n"
            + "\n".join(lines)
            + "\n",
            flush=True,
        )


def run_worker(settings: Settings, url: str) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    app = create_app(settings, url)
    uvloop.install()
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            reuse_port=settings.workers > 1,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=None,
            print=lambda message: _logger.info("listening on http://%s:%d", settings.host, settings.port),
        )
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(
            f"{settings.host}:{settings.port} is already in use — another `surge serve` or another program is "
            "listening there. Stop it, or choose another port with --port / SURGE_PORT."
        ) from None


def _die_with_parent() -> None:
    # A worker must not outlive `surge serve`: if the parent is killed (SIGKILL, OOM), an orphan would keep the port
    # and the database busy. Linux delivers SIGTERM to us when the parent dies; elsewhere a supervisor has to.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        _logger.warning("cannot ask to be stopped with the parent process on this platform")


def _run_child_worker(settings: Settings, url: str, parent_pid: int) -> None:
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        return
    run_worker(settings, url)


def _run_workers(settings: Settings, url: str) -> int:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_run_child_worker, args=(settings, url, os.getpid()), name=f"surge-worker-{n}")
        for n in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signal_number: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                worker.terminate()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for worker in workers:
        worker.join()
    failed = [w.name for w in workers if w.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        _logger.error("workers exited abnormally: %s", ", ".join(failed))
        return 1
    return 0
