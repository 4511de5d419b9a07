"""A PostgreSQL server for the peer benchmark, from the distribution's packages
(``scripts/services/install-postgres.sh``): a fresh cluster in a temporary directory, on
127.0.0.1 and a free port, stopped and removed at exit. As root it runs as the unprivileged
``postgres`` user, which PostgreSQL insists on.

By default the cluster keeps PostgreSQL's durability (``fsync``, ``synchronous_commit``, full
page writes): the local-disk store it is compared with fsyncs every write too. ``durable=False``
turns all three off, as the test suite's throw-away clusters do.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.moto import free_port, stop_group

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    #: The postmaster's process (and process group) id, to read the server's CPU time.
    pid: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL: every run starts from empty tables."""
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _bindir() -> Path:
    """The newest versioned server directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("postgres")
    if on_path is None:
        raise RuntimeError("PostgreSQL not found: run scripts/services/install-postgres.sh")
    return Path(on_path).parent


def _answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


@contextlib.contextmanager
def postgres_server(*, durable: bool = True) -> Iterator[Postgres]:
    """Initialise and start a throw-away cluster; stop it (fast shutdown) and delete it at exit."""
    bindir = _bindir()
    workdir = Path(tempfile.mkdtemp(prefix="objstore-wfp-bench-postgres-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data, log = workdir / "data", workdir / "postgres.log"
    process = None
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        initdb += ["-E", "UTF8", "--locale=C"]
        subprocess.run(initdb, capture_output=True, check=True, timeout=120, cwd=workdir, **as_user)
        port = free_port()
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
        server += ["-k", str(workdir), "-c", "max_connections=300"]
        if not durable:
            server += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                server,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=workdir,
                **as_user,
            )
        found = Postgres("127.0.0.1", port, process.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(found.url()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield found
    finally:
        if process is not None:
            stop_group(process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(workdir, ignore_errors=True)
