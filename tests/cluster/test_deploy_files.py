"""The deployment artefacts in deploy/ say what the code and the proof rely on: HAProxy checks /readyz and its
configurations are valid (`haproxy -c`), engines stop gracefully within their grace period, PgBouncer runs in
transaction mode with the engine told so, one shared processor budget, and the shell scripts parse."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from engine.serve import SHUTDOWN_TIMEOUT_S

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("name", ["haproxy.cfg", "haproxy-compose.cfg"])
def test_haproxy_configurations_are_valid_and_check_readyz(name: str) -> None:
    text = (DEPLOY / name).read_text()
    assert "option httpchk GET /readyz" in text and "option redispatch" in text
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy is None:
        pytest.skip("haproxy is not installed (deploy/install-services.sh installs it)")
    result = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_deployment_with_graceful_engines() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"primary", "replica", "pgbouncer", "engine", "haproxy"}
    assert "pg_basebackup" in services["replica"]["command"]
    engine = services["engine"]
    assert "/readyz" in " ".join(engine["healthcheck"]["test"])
    assert engine["stop_signal"] == "SIGTERM"
    assert float(engine["stop_grace_period"].rstrip("s")) > SHUTDOWN_TIMEOUT_S
    environment = engine["environment"]
    assert environment["SURGE_PROCESSOR_BUDGET"] == "shared"
    assert environment["SURGE_DATABASE_PGBOUNCER"] == "true"
    assert ":6432/" in environment["DATABASE_URL"] and ":5432/" in environment["SURGE_DIRECT_DATABASE_URL"]
    assert "surge_replica" in environment["SURGE_REPLICA_URL"]


def test_the_systemd_unit_gates_start_on_readyz_and_stops_gracefully() -> None:
    unit = (DEPLOY / "systemd" / "surge.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert lines["KillSignal"] == "SIGTERM" and float(lines["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT_S
    assert "wait-ready.sh" in lines["ExecStartPost"] and (DEPLOY / "wait-ready.sh").exists()


def test_pgbouncer_runs_in_transaction_mode() -> None:
    assert "pool_mode = transaction" in (DEPLOY / "pgbouncer.ini").read_text()


@pytest.mark.parametrize("script", ["install-services.sh", "wait-ready.sh", "rolling-restart.sh"])
def test_the_scripts_parse(script: str) -> None:
    result = subprocess.run(["sh", "-n", str(DEPLOY / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
