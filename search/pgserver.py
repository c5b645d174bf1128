"""A throwaway PostgreSQL 15 server for tests and measurements of shared storage.

:func:`temporary` runs Debian's ``initdb`` and ``pg_ctl`` from
``/usr/lib/postgresql/15/bin`` in a new temporary folder, listening on 127.0.0.1
on a free port with an empty database ``search``, and stops and deletes it on
exit. PostgreSQL refuses to run as root, so as root the commands run through
``runuser -u postgres --`` in a folder owned by that user. The package's own
cluster (``/var/lib/postgresql``) is not used.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ServerError(RuntimeError):
    """The server could not be set up; the message is the one-line reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary(database: str = "search") -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:<port>/<database>`` of a fresh server (module doc)."""
    if not (PG_BIN / "initdb").is_file():
        raise ServerError(
            f"{PG_BIN / 'initdb'}: not found; apt-get install postgresql (debian-packages.txt)"
        )
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="tinygru-pg-"))
    if as_pg:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", free_port()

    def pg(*args: str) -> None:
        r = subprocess.run([*as_pg, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            raise ServerError(f"{Path(args[0]).name} exited {r.returncode}: {last[0]}")

    try:
        pg(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
           "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start")  # fmt: skip
        pg(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "stop"], capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
