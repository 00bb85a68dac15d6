"""Registration in an etcd with TLS and authentication on: `register()` with `etcd_ca`,
`etcd_user` and `etcd_password` writes the key; a wrong password raises RefusedError saying
etcd refused the user."""

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import quaestor
from support import START_TIMEOUT, Child, Pki, free_ports, wait_for

USER = "quaestor"
PASSWORD = "secret"


class SecureEtcd:
    """One etcd member serving clients over TLS (the PKI's server certificate) with
    authentication on: `root` (password `rootpw`) and USER, who may read and write
    `services/`."""

    def __init__(self, dir: Path, pki: Pki) -> None:
        self.pki = pki
        self.client_port, peer_port = free_ports(2)
        self.url = f"https://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.user: str | None = None
        self.child = Child(
            "etcd",
            [
                "etcd",
                "--name", "secure",
                "--data-dir", str(dir / "data"),
                "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"secure={peer}",
                "--cert-file", str(pki.chain),
                "--key-file", str(pki.key),
                "--logger", "zap",
            ],
            dir / "etcd.log",
        )
        wait_for(f"etcd at {self.url} to be healthy\n{self.child.log_tail()}", START_TIMEOUT, self._healthy)
        for args in (
            ("user", "add", "root:rootpw"),
            ("user", "grant-role", "root", "root"),
            ("user", "add", f"{USER}:{PASSWORD}"),
            ("role", "add", "registry"),
            ("role", "grant-permission", "registry", "readwrite", "services/", "--prefix=true"),
            ("user", "grant-role", USER, "registry"),
            ("auth", "enable"),
        ):
            self.etcdctl(*args)
        self.user = "root:rootpw"

    def _healthy(self) -> bool | None:
        if self.child.process.poll() is not None:
            raise AssertionError(f"etcd exited with code {self.child.process.returncode}\n{self.child.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", self.client_port), timeout=1).close()
        except OSError:
            return None
        return self._run("endpoint", "health").returncode == 0 or None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = ["--user", self.user] if self.user else []
        return subprocess.run(
            ["etcdctl", "--endpoints", self.url, "--cacert", str(self.pki.ca), *user,
             "--dial-timeout=2s", "--command-timeout=5s", *args],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    def etcdctl(self, *args: str) -> str:
        result = self._run(*args)
        assert result.returncode == 0, f"etcdctl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def keys(self) -> set[str]:
        out = self.etcdctl("get", "--prefix", "services/", "--keys-only")
        return {line for line in out.splitlines() if line}

    def stop(self) -> None:
        self.child.stop()


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureEtcd]:
    server = SecureEtcd(tmp_path_factory.mktemp("secure-etcd"), pki)
    yield server
    server.stop()


def test_register_with_tls_and_credentials(secure_etcd: SecureEtcd) -> None:
    with quaestor.Reporter() as reporter:
        reporter.add_service("Worker")
        reporter.register(
            etcd=secure_etcd.url,
            host="127.0.0.1",
            etcd_ca=secure_etcd.pki.ca,
            etcd_user=USER,
            etcd_password=PASSWORD,
        )
        key = f"services//Worker/127.0.0.1/{reporter.port}/http"
        assert key in secure_etcd.keys()
    assert key not in secure_etcd.keys()


def test_a_wrong_password_is_refused_and_says_so(secure_etcd: SecureEtcd) -> None:
    with quaestor.Reporter() as reporter:
        reporter.add_service("Worker")
        with pytest.raises(quaestor.RefusedError) as refused:
            reporter.register(
                etcd=secure_etcd.url,
                host="127.0.0.1",
                etcd_ca=str(secure_etcd.pki.ca),
                etcd_user=USER,
                etcd_password="wrong",
            )
        assert "etcd refused user quaestor: authentication failed" in str(refused.value)
        assert isinstance(refused.value, quaestor.QuaestorError)


def test_half_credentials_are_a_value_error(secure_etcd: SecureEtcd) -> None:
    with quaestor.Reporter() as reporter:
        reporter.add_service("Worker")
        with pytest.raises(ValueError):
            reporter.register(etcd=secure_etcd.url, host="127.0.0.1", etcd_user=USER)
        with pytest.raises(ValueError):
            reporter.register(etcd=secure_etcd.url, host="127.0.0.1", etcd_cert="c.pem")
