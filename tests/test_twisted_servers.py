"""Real Twisted servers with real clients, through ``polyloop_twisted.compat`` on
asyncio, gevent and Tornado: ``twisted.names`` over UDP and TCP (``dig``),
``twisted.mail`` SMTP (``smtplib``), ``twisted.web`` with ``static.File`` (``curl``) and
``twisted.protocols.ftp`` (``ftplib``, passive and active).

Each server runs in a process of its own (``tests/_twisted_servers.py``); the clients are
programs and libraries no one here wrote. ``native`` is the same server on Twisted's own
reactor: the baseline that shows each check is right.

The web and FTP servers use the global reactor (``static.File``'s producer runs on
``task.cooperate``; ``twisted.protocols.ftp`` calls ``reactor.connectTCP`` and
``listenTCP``), so their script installs the compat reactor as *the* reactor with
``polyloop_twisted.compat.install(backend=...)``.
"""

from __future__ import annotations

import ftplib
import io
import json
import os
import selectors
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("twisted", reason="polyloop_twisted.compat needs polyloop[twisted]")


SCRIPT = Path(__file__).resolve().parent / "_twisted_servers.py"
BACKENDS = ["asyncio", "gevent", "tornado"]
STARTUP = 30.0


#: Servers that need the global reactor run through install() on polyloop, and natively.
ON_INSTALLED = ["native", *BACKENDS]

needs_dig = pytest.mark.skipif(
    shutil.which("dig") is None,
    reason="dig is not installed (Debian's dnsutils, listed in .ci/apt-packages)",
)
needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (listed in .ci/apt-packages)"
)


@contextmanager
def served(name: str, backend: str, root: Path) -> Iterator[int]:
    """Start server ``name`` on ``backend``; yield its port; stop it (stdin closed, then
    SIGKILL if it has not gone within 15 s)."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), name, backend, str(root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            yield _announced(proc, stderr)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
            assert proc.stdout is not None
            proc.stdout.close()
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
        assert proc.returncode == 0, (
            f"the {name} server on {backend} exited {proc.returncode}:\n{errors}"
        )


def _announced(proc: subprocess.Popen[bytes], stderr: io.BufferedRandom | object) -> int:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = b""
    deadline = time.monotonic() + STARTUP
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in got:
            left = deadline - time.monotonic()
            chunk = os.read(fd, 4096) if left > 0 and sel.select(left) else b""
            if not chunk:
                proc.kill()
                proc.wait(15)
                errors = b""
                if hasattr(stderr, "seek") and hasattr(stderr, "read"):
                    stderr.seek(0)
                    errors = stderr.read()
                raise AssertionError(f"the server did not start ({got!r}): {errors.decode()}")
            got += chunk
    return int(json.loads(got.partition(b"\n")[0])["port"])


# --- twisted.names: dig over UDP and TCP ----------------------------------------------


def dig(port: int, *args: str) -> str:
    proc = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_dig
@pytest.mark.parametrize("backend", ["native", *BACKENDS, "twisted"])
def test_twisted_names_with_dig(backend: str, tmp_path: Path) -> None:
    with served("dns", backend, tmp_path) as port:
        # over UDP (dig's default):
        assert dig(port, "+short", "www.example.test", "A").split() == ["192.0.2.80"]
        assert dig(port, "+short", "www.example.test", "AAAA").split() == ["2001:db8::80"]
        assert dig(port, "+short", "example.test", "MX").split() == ["10", "mail.example.test."]
        assert dig(port, "+short", "example.test", "TXT").strip() == '"polyloop served this"'
        assert "status: NXDOMAIN" in dig(port, "nothere.example.test", "A")
        full = dig(port, "host77.example.test", "A")
        assert (
            "status: NOERROR" in full
            and "198.51.100.77" in full
            and ";; SERVER: 127.0.0.1#" in full
        )
        # over TCP:
        assert dig(port, "+tcp", "+short", "www.example.test", "A").split() == ["192.0.2.80"]
        # a zone transfer (TCP, several messages): SOA first and last, every host
        axfr = [line.split() for line in dig(port, "example.test", "AXFR").splitlines()]
        records = [r for r in axfr if r and not r[0].startswith(";")]
        assert records[0][3] == records[-1][3] == "SOA"
        hosts = {r[0] for r in records if r[0].startswith("host")}
        assert len(hosts) == 128


# --- twisted.mail: smtplib ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["native", *BACKENDS, "twisted"])
def test_twisted_mail_smtp_with_smtplib(backend: str, tmp_path: Path) -> None:
    message = (
        "From: alice@example.org\r\nTo: bob@example.test\r\nSubject: polyloop\r\n\r\n"
        "Hello Bob,\r\n.a line that starts with a dot\r\n" + "x" * 5000 + "\r\nBye\r\n"
    )
    with served("smtp", backend, tmp_path) as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            code, banner = client.ehlo("client.example.org")
            assert code == 250, banner
            refused = client.sendmail("alice@example.org", ["bob@example.test"], message)
            assert refused == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("alice@example.org", ["carol@elsewhere.example"], message)
            client.sendmail("alice@example.org", ["bob@example.test"], "Subject: two\r\n\r\n2")
    first = (tmp_path / "mail-1").read_bytes()
    assert first.startswith(b"Received: by polyloop's compat reactor\n")
    assert b"Subject: polyloop\n" in first and b"\n.a line that starts with a dot\n" in first
    assert b"x" * 5000 in first and first.endswith(b"Bye\n")
    assert (tmp_path / "mail-2").read_bytes().endswith(b"Subject: two\n\n2\n")


# --- twisted.web static.File: curl -----------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "30", *args],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@needs_curl
@pytest.mark.parametrize("backend", ON_INSTALLED)
def test_twisted_web_static_file_with_curl(backend: str, tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "hello.txt").write_bytes(b"hello from static.File\n")
    with served("web", backend, tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        got = curl(f"{base}/hello.txt")
        assert got.returncode == 0 and got.stdout == b"hello from static.File\n", got
        got = curl(f"{base}/big.bin")  # the producer on task.cooperate
        assert got.returncode == 0 and got.stdout == big, got.stderr
        got = curl("--range", "100-199", "--write-out", "%{http_code}", f"{base}/big.bin")
        assert got.stdout == big[100:200] + b"206", got.stderr
        got = curl("--write-out", "%{http_code}", "--output", "/dev/null", f"{base}/missing")
        assert got.stdout == b"404"
        # two at once, on one connection each, and keep-alive on one connection
        got = curl(f"{base}/hello.txt", f"{base}/hello.txt")
        assert got.stdout == b"hello from static.File\n" * 2


# --- twisted.protocols.ftp: ftplib, passive and active --------------------------------


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
@pytest.mark.parametrize("backend", ON_INSTALLED)
def test_twisted_ftp_with_ftplib(backend: str, passive: bool, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    (tmp_path / "data.bin").write_bytes(payload)
    with served("ftp", backend, tmp_path) as port:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=30)
            ftp.login()  # anonymous
            ftp.set_pasv(passive)
            assert "data.bin" in ftp.nlst(".")
            got = bytearray()
            ftp.retrbinary("RETR data.bin", got.extend)
            assert bytes(got) == payload
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=30)
            ftp.login("alice", "secret")
            ftp.set_pasv(passive)
            ftp.storbinary("STOR upload.bin", io.BytesIO(payload[::-1]))
            assert ftp.size("upload.bin") == len(payload)
            lines: list[str] = []
            ftp.retrlines("LIST", lines.append)
            assert any(line.endswith("upload.bin") for line in lines), lines
    assert (tmp_path / "upload.bin").read_bytes() == payload[::-1]
