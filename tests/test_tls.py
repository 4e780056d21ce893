"""TLS to the database: `[database] ssl_ca` (and the client certificate keys) against a
real MariaDB serving a certificate from a CA the test makes, with an account that
requires TLS. The binlog stream and the queries both go over it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from tests.conftest import Proc, start_mariadb, unavailable, write_config
from tests.test_watch import DB, alarm_of, watch

pytestmark = pytest.mark.mariadb


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d: Path, ca: str, name: str, san: str) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
            cwd=d)


@pytest.fixture
def tls_mariadb(tmp_path: Path) -> Iterator[tuple[MariaDB, Path]]:
    """A server whose certificate names only `localhost` (not 127.0.0.1), signed by `ca`;
    the reactor account must use TLS. `other` is a CA that signed nothing of it."""
    certs = tmp_path / "certs"
    certs.mkdir()
    try:
        make_ca(certs, "ca")
        make_ca(certs, "other")
        make_cert(certs, "ca", "server", "DNS:localhost")
        make_cert(certs, "ca", "client", "DNS:reactor")
    except FileNotFoundError:
        unavailable("openssl not found (apt-get install openssl)")
    server = start_mariadb(tmp_path / "db", extra_args=(
        f"--ssl-ca={certs / 'ca.pem'}", f"--ssl-cert={certs / 'server.pem'}",
        f"--ssl-key={certs / 'server.key'}"))
    try:  # the server goes whatever fails after it started
        server.setup_reactor_schema()
        server.execute("ALTER USER 'reactor'@'localhost' REQUIRE SSL")
        yield server, certs
    finally:
        server.cleanup()


def config_for(tmp_path: Path, server: MariaDB, **database: object) -> Path:
    return write_config(tmp_path / "c.ini", server,
                        {"database": {"host": "127.0.0.1", **database},
                         "monitor": {"mode": "binlog"}})


def test_stream_and_queries_over_verified_tls(tls_mariadb: tuple[MariaDB, Path],
                                              tmp_path: Path, procs: list[Proc]) -> None:
    """ssl_ca verifies the server (ssl_verify_identity off: the certificate names
    localhost, reactor connects to 127.0.0.1); the account requires TLS and the alarm
    comes from the binlog stream."""
    server, certs = tls_mariadb
    config = config_for(tmp_path, server, ssl_ca=certs / "ca.pem",
                        ssl_cert=certs / "client.pem", ssl_key=certs / "client.key",
                        ssl_verify_identity="no")
    p = watch(procs, config)
    server.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    got = alarm_of(p.line())
    assert (got["process_id"], got["process_name"], got["source"]) == (2, "apache2", "binlog")


@pytest.mark.parametrize(("database", "why"), [
    ({"ssl_ca": "other"}, "certificate verify failed"),
    ({"ssl_ca": "ca"}, "127.0.0.1"),  # ssl_verify_identity defaults to yes: name mismatch
])
def test_unverifiable_server_is_refused(tls_mariadb: tuple[MariaDB, Path], tmp_path: Path,
                                       database: dict[str, str], why: str) -> None:
    """A server whose certificate the CA did not sign, or that names another host: the
    connection is refused (exit 3, database unavailable at start) and says why."""
    server, certs = tls_mariadb
    config = config_for(tmp_path, server, ssl_ca=certs / f"{database['ssl_ca']}.pem")
    p = Proc(["watch", "--config", str(config)])
    assert p.proc.wait(30) == 3
    assert why in p.stderr and "reactor-pw" not in p.stderr
