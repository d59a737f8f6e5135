"""Security basics: no password in any output, metrics on loopback, input limits, what compose exposes."""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import yaml
from sqlalchemy.engine import make_url

from sagad.cli.daemon import daemon_command
from sagad.cli.loadtest import _daemon_command
from sagad.content.brief import MAX_BRIEF_BYTES
from sagad.endpoint import announced
from sagad.store.db import Database, asyncpg_dsn
from tests.processes import Daemon
from tests.security.cli import REPO, environment, sagad

EXAMPLES = REPO / "examples"
PASSWORD = f"Sup3rS3cret{uuid.uuid4().hex[:10]}"
"""Distinctive enough that finding it anywhere in an output can only mean a leak."""
CLOSED_PORT_URL = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/none"
NO_RUN = "00000000-0000-0000-0000-000000000000"


def _sync(statements: list[str], url: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    anyio.run(run)


@pytest.fixture
def password_url(server_url: str, database_url: str) -> Iterator[str]:
    """The test database through a role of its own that logs in with PASSWORD.

    On a server that checks passwords the password is the role's; on a trust server (the embedded
    one) any password is accepted. Either way it travels in the URL of every command.
    """
    role = f"sagad_sec_{uuid.uuid4().hex[:8]}"
    try:
        _sync([f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"], server_url)
    except asyncpg.InsufficientPrivilegeError:
        pytest.skip("the test server does not let this user create a role")
    database = make_url(database_url).database
    try:
        _sync(
            [
                f"GRANT CONNECT ON DATABASE {database} TO {role}",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            ],
            database_url,
        )
        yield make_url(database_url).set(username=role, password=PASSWORD).render_as_string(hide_password=False)
    finally:
        _sync([f"DROP OWNED BY {role}"], database_url)
        _sync([f"DROP ROLE {role}"], server_url)


# ---------------------------------------------------------------------------------------------------------------
# The database password


def test_a_daemon_that_cannot_reach_its_database_exits_with_one_line_without_the_password(tmp_path: Path) -> None:
    result = sagad("run", "--metrics-addr", "127.0.0.1:0", "--database-url", CLOSED_PORT_URL, cwd=tmp_path)
    assert result.code == 1
    line = result.one_error_line()
    assert "cannot connect to postgresql://someone:***@127.0.0.1:1/none" in line
    assert PASSWORD not in result.output


# submit, status, audit and migrate: tests/acceptance/test_cli_input.py (closed port, unknown role).
OTHER_COMMANDS = {
    "demo": ("demo", "--examples", str(EXAMPLES)),
    "loadtest": ("loadtest", "--runs", "1", "--daemons", "1"),
}


@pytest.mark.parametrize("command", list(OTHER_COMMANDS))
def test_demo_and_loadtest_that_cannot_reach_the_database_fail_without_the_password(
    command: str, tmp_path: Path
) -> None:
    result = sagad(*OTHER_COMMANDS[command], "--database-url", CLOSED_PORT_URL, cwd=tmp_path)
    assert result.code != 0
    assert "Connect call failed" in result.stderr or "cannot connect" in result.stderr, result.stderr
    assert PASSWORD not in result.output


def test_demo_that_cannot_reach_the_database_fails_in_one_line(tmp_path: Path) -> None:
    result = sagad(*OTHER_COMMANDS["demo"], "--database-url", CLOSED_PORT_URL, cwd=tmp_path)
    assert result.code == 1
    assert "cannot connect" in result.one_error_line()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://someone:{PASSWORD}@127.0.0.1:notaport/none",
        f"postgresql://someone:{PASSWORD}@[::1/none",
        f"postgresql+asyncpg://someone:{PASSWORD}@127.0.0.1:1/none",
        f"postgresql://someone:{PASSWORD}@127.0.0.1:1/none?sslmode=bogus",
        f"mysql://someone:{PASSWORD}@127.0.0.1:1/none",
        f"not a URL at all {PASSWORD}",
    ],
    ids=["port not a number", "unclosed bracket", "sqlalchemy driver", "bad sslmode", "mysql", "no URL"],
)
def test_a_malformed_database_url_is_refused_in_one_line_without_the_password(url: str, tmp_path: Path) -> None:
    result = sagad("status", NO_RUN, "--database-url", url, cwd=tmp_path)
    assert result.code == 1
    result.one_error_line()
    assert PASSWORD not in result.output


def test_a_password_given_as_a_url_parameter_is_masked_too(tmp_path: Path) -> None:
    result = sagad(
        "status", NO_RUN, "--database-url", f"postgresql://someone@127.0.0.1:1/none?password={PASSWORD}", cwd=tmp_path
    )
    assert result.code == 1
    assert PASSWORD not in result.output, result.stderr


def test_a_port_out_of_range_is_refused_in_one_line(tmp_path: Path) -> None:
    result = sagad(
        "status", NO_RUN, "--database-url", f"postgresql://someone:{PASSWORD}@127.0.0.1:99999/none", cwd=tmp_path
    )
    assert result.code == 1
    assert "cannot connect" in result.one_error_line()
    assert PASSWORD not in result.output


def test_the_load_test_does_not_put_the_password_on_its_daemons_command_lines() -> None:
    command = _daemon_command(0, [])
    assert "--database-url" not in command, "the URL (and its password) must travel in the environment"


async def _wait_until_terminal(url: str, runs: list[str], seconds: float = 30) -> None:
    db = await Database.connect(url, max_size=1)
    try:
        with anyio.fail_after(seconds):
            while True:
                rows = await db.fetch(
                    "SELECT count(*) FROM workflow_runs WHERE id = ANY($1::uuid[])"
                    " AND status IN ('completed', 'compensated')",
                    [uuid.UUID(run) for run in runs],
                )
                if rows[0][0] == len(runs):
                    return
                await anyio.sleep(0.1)
    finally:
        await db.close()


@pytest.mark.slow
def test_the_password_appears_in_no_output_of_a_working_deployment(
    password_url: str, database_url: str, tmp_path: Path
) -> None:
    """Every command, the daemon's debug log, its metrics and the status JSON, on a database reached with a password."""
    outputs: list[tuple[str, str]] = []

    def command(*args: str) -> str:
        result = sagad(*args, "--database-url", password_url, cwd=tmp_path)
        outputs.append((" ".join(args), result.output))
        assert result.code == 0, result.output
        return result.stdout

    command("migrate")
    runs = [
        command("submit", str(EXAMPLES / "brief.json")).strip(),
        command("submit", str(EXAMPLES / "brief_qc_fail.json")).strip(),
    ]
    command("status", runs[0])

    log = tmp_path / "daemon.log"
    daemon = [sys.executable, "-m", "sagad", "run", "--metrics-addr", "127.0.0.1:0", "--log-level", "debug"]
    with log.open("wb") as out:
        # The URL goes in the environment here, so that this test itself keeps it off the command line.
        process = subprocess.Popen(
            [*daemon, "--poll-seconds", "0.05"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=environment(SAGAD_DATABASE_URL=password_url),
        )
    try:
        anyio.run(_wait_until_terminal, database_url, runs)
        with urllib.request.urlopen(f"{announced(log.read_text())}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        outputs.append(("metrics", metrics))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    outputs.append(("daemon log", log.read_text()))

    statuses = [json.loads(command("status", run)) for run in runs]
    assert [s["status"] for s in statuses] == ["completed", "compensated"]
    command("audit")
    command("audit", "--json")
    assert "sagad_runs_total" in metrics
    leaks = [name for name, text in outputs if PASSWORD in text]
    assert leaks == [], f"the password appears in: {leaks}"


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_worker_id_the_database_cannot_store_is_refused_at_start(database_url: str, tmp_path: Path) -> None:
    # "\udcff" reaches the command line as the byte 0xff, and comes back from it as "\udcff".
    daemon = Daemon(database_url, "daemon-\udcff", tmp_path).start()
    assert daemon.process is not None
    try:
        with anyio.fail_after(30):  # until it exits, or its claimer crashes
            while True:
                output = daemon.log.read_text(errors="replace")
                if daemon.process.poll() is not None or "crashed" in output:
                    break
                await anyio.sleep(0.1)
        assert "crashed" not in output, output[:2000]
        assert daemon.process.poll() not in (None, 0)
        [line] = output.splitlines()
        assert "--worker-id" in line
    finally:
        daemon.ensure_stopped()


# ---------------------------------------------------------------------------------------------------------------
# The metrics endpoint


def test_the_metrics_endpoint_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    default = inspect.signature(daemon_command).parameters["metrics_addr"].default
    assert default == "127.0.0.1:9464"
    help_text = sagad("run", "--help", cwd=tmp_path).stdout
    flat = " ".join(help_text.replace("│", " ").split())
    option = re.search(r"--metrics-addr (.*?)(?= --[a-z])", flat)
    assert option is not None, help_text
    assert "[default: 127.0.0.1:9464]" in option.group(1)


def _non_loopback_ipv4() -> list[str]:
    """This machine's IPv4 addresses other than 127.0.0.0/8."""
    found: set[str] = set()
    if shutil.which("ip"):
        listing = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False)
        found.update(re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", listing.stdout))
    with contextlib.suppress(socket.gaierror):
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    return sorted(address for address in found if not address.startswith("127."))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def metrics_daemon(database_url: str, tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(database_url, "metrics-daemon", tmp_path).start()
    assert daemon.process is not None
    try:
        yield daemon
        daemon.signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0, daemon.log.read_text()
    finally:
        daemon.ensure_stopped()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_daemon_told_127_0_0_1_port_0_serves_metrics_on_loopback_only(metrics_daemon: Daemon) -> None:
    url = await metrics_daemon.metrics_url()
    host, port = re.fullmatch(r"http://([\d.]+):(\d+)/metrics", url).groups()  # type: ignore[union-attr]
    assert host == "127.0.0.1"
    assert await metrics_daemon.metric("sagad_claims_total") >= 0
    addresses = _non_loopback_ipv4()
    if not addresses:
        pytest.skip("this machine has no IPv4 address besides loopback")
    with socket.create_server(("0.0.0.0", 0)) as control:
        control_port = control.getsockname()[1]
        reachable = [a for a in addresses if await anyio.to_thread.run_sync(_reachable, a, control_port)]
    if not reachable:
        pytest.skip(f"no connection to this machine's own addresses {addresses} succeeds, even to 0.0.0.0")
    for address in reachable:
        assert not await anyio.to_thread.run_sync(_reachable, address, int(port)), f"metrics reachable on {address}"


# ---------------------------------------------------------------------------------------------------------------
# Brief size and nesting limits, at the boundary


def _padded(size: int) -> bytes:
    """examples/brief.json followed by blanks up to exactly ``size`` bytes: valid JSON of that size."""
    data = (EXAMPLES / "brief.json").read_bytes()
    return data + b" " * (size - len(data))


def test_a_brief_of_exactly_the_size_limit_is_submitted(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "brief.json"
    path.write_bytes(_padded(MAX_BRIEF_BYTES))
    result = sagad("submit", str(path), "--database-url", database_url, cwd=tmp_path)
    assert result.code == 0, result.stderr
    uuid.UUID(result.stdout.strip())


def test_a_brief_one_byte_over_the_size_limit_is_refused_in_one_line(database_url: str, tmp_path: Path) -> None:
    result = sagad("submit", "-", "--database-url", database_url, cwd=tmp_path, stdin=_padded(MAX_BRIEF_BYTES + 1))
    assert result.code != 0
    line = result.one_error_line()
    assert line == f"sagad: invalid brief: brief is over the {MAX_BRIEF_BYTES}-byte limit"
    assert result.stdout == ""
    assert _run_count(database_url) == 0


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(900, "field 'client': Input should be a valid string"), (2000, "brief is nested too deeply")],
)
def test_a_deeply_nested_brief_is_refused_in_one_line(
    depth: int, expected: str, database_url: str, tmp_path: Path
) -> None:
    brief = json.loads((EXAMPLES / "brief.json").read_bytes())
    data = json.dumps({**brief, "client": "@"}).encode().replace(b'"@"', b"[" * depth + b"]" * depth)
    assert len(data) <= MAX_BRIEF_BYTES
    result = sagad("submit", "-", "--database-url", database_url, cwd=tmp_path, stdin=data)
    assert result.code != 0
    assert result.one_error_line() == f"sagad: invalid brief: {expected}"
    assert _run_count(database_url) == 0


def test_an_endless_brief_is_refused_in_one_line_without_reading_it_all(database_url: str, tmp_path: Path) -> None:
    # Under a 1 GiB address-space limit, so that reading /dev/zero to its end fails fast instead of eating the machine.
    limited = ["sh", "-c", 'ulimit -v 1048576 && exec "$@"', "sh", sys.executable, "-m", "sagad"]
    done = subprocess.run(
        [*limited, "submit", "/dev/zero", "--database-url", database_url],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        env=environment(),
        check=False,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0
    assert "Traceback" not in stderr, stderr[-500:]
    [line] = stderr.splitlines()
    assert f"over the {MAX_BRIEF_BYTES}-byte limit" in line
    assert _run_count(database_url) == 0


def _run_count(url: str) -> int:
    async def count() -> int:
        db = await Database.connect(url, max_size=1)
        try:
            return int((await db.fetch("SELECT count(*) FROM workflow_runs"))[0][0])
        finally:
            await db.close()

    return anyio.run(count)


# ---------------------------------------------------------------------------------------------------------------
# What docker compose exposes

COMPOSE = REPO / "docker-compose.yml"


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_publishes_grafana_only_and_shares_no_host_network() -> None:
    services = _services()
    assert {name for name, service in services.items() if service.get("ports")} == {"grafana"}
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        assert "host" not in str(service.get("networks", "")), f"{name} joins the host network"


def test_sagad_metrics_listen_inside_the_compose_network_only() -> None:
    sagad_services = {name: s for name, s in _services().items() if s.get("image") == "sagad:local"}
    assert "sagad" in sagad_services
    for name, service in sagad_services.items():
        assert "ports" not in service, f"{name} publishes a port"
        command = service.get("command", [])
        if "run" in command:
            # 0.0.0.0 inside the container is its compose network interface; nothing maps it to the host.
            address = command[command.index("--metrics-addr") + 1]
            assert address.endswith(":9464"), address


def test_grafana_is_published_on_loopback_or_does_not_make_anonymous_visitors_admin() -> None:
    grafana = _services()["grafana"]
    loopback_only = all(str(port).startswith("127.0.0.1:") for port in grafana["ports"])
    environment = grafana.get("environment", {})
    anonymous_admin = (
        str(environment.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "true"
        and environment.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Admin"
    )
    assert loopback_only or not anonymous_admin
