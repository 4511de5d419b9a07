"""Real redis-server and PostgreSQL processes for the example backends, one of each per test
session, bound to 127.0.0.1 on free ports with their data in temporary directories.

Both come from the distribution's packages (``scripts/services/install-redis.sh``,
``scripts/services/install-postgres.sh``). As root, PostgreSQL runs as the unprivileged
``postgres`` user, which it insists on. Each test gets its own namespace: a Redis key prefix,
a PostgreSQL schema; both are removed afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from tests.servers import free_port, log_tail, service_unavailable, stop_process_group

START_TIMEOUT = 30.0


def _wait(ready: Any, process: subprocess.Popen[bytes]) -> bool:
    """Poll ``ready()`` until it stops raising, the process exits, or the timeout passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            ready()
            return True
        except Exception:
            time.sleep(0.1)
    return False


# -- Redis -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a redis-server started for this session."""
    executable = shutil.which("redis-server")
    if executable is None:
        service_unavailable("redis-server not found; run scripts/services/install-redis.sh")
    workdir = Path(tempfile.mkdtemp(prefix="objstore-wfp-redis-"))
    log = workdir / "redis.log"
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    command += ["--save", "", "--appendonly", "no", "--logfile", str(log)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        if not _wait(client.ping, process):
            service_unavailable(f"redis-server did not start on port {port}: {log_tail(log)}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop_process_group(process, signal.SIGTERM, grace=15)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted after the test."""
    prefix = f"test-{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


# -- PostgreSQL --------------------------------------------------------------------------------
def _postgres_bindir() -> Path | None:
    """The newest versioned server directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    if found:
        return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A libpq connection string to a PostgreSQL server started for this session."""
    bindir = _postgres_bindir()
    if bindir is None:
        service_unavailable("PostgreSQL server not found; run scripts/services/install-postgres.sh")
    as_user: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="objstore-wfp-postgres-"))
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(workdir)
            service_unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data, log = workdir / "data", workdir / "postgres.log"
    port = free_port()
    process = None
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(initdb, capture_output=True, check=False, timeout=120, cwd=workdir, **as_user)
        if done.returncode != 0:
            service_unavailable(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        # Durability settings off: the data directory is thrown away after the session.
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
        server += ["-k", str(workdir), "-c", "fsync=off", "-c", "synchronous_commit=off"]
        server += ["-c", "full_page_writes=off", "-c", "max_connections=200"]
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                server,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=workdir,
                **as_user,
            )
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        if not _wait(lambda: psycopg.connect(dsn, connect_timeout=5).close(), process):
            service_unavailable(f"PostgreSQL did not start on port {port}: {log_tail(log)}")
        yield dsn
    finally:
        if process is not None:
            stop_process_group(process, signal.SIGINT, grace=15)  # fast shutdown
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; the schema is dropped after the test."""
    schema = f"test_{uuid.uuid4().hex}"
    yield schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
