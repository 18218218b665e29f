# SPDX-License-Identifier: Apache-2.0
"""The control API over TLS: fleetgate-control with control.tls_cert and
control.tls_key from a self-signed certificate that the openssl CLI makes at
test time (the Control starter of test_control.py, per-test topics). A client
verifying against that certificate reads GET /v1/regions, keeps the
connection alive across requests and follows GET /v1/stream; plain HTTP sent
to the TLS port gets a plaintext 400 that says so and the service goes on; a
client stalled in the handshake is dropped at the read timeout and holds up
nobody meanwhile; fleetgatectl talks https (regions, and watch over the
event stream) with --cacert or FLEETGATECTL_CACERT and, without the CA,
fails with exit code 5 and says why; a missing, unreadable or mismatched
file stops start-up naming the key."""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import fgtest
from test_control import TOKENS, Control, Topics
from test_fleetgatectl import run_ctl

EXIT_TLS = 5


def openssl(*args):
    p = subprocess.run(["openssl", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr.decode()


class Certs:
    """A temp dir with a self-signed certificate for localhost only
    (cert.pem, key.pem) and an unrelated key (other.pem)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fg-tls-")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        self.other = os.path.join(self.dir, "other.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost",
                "-keyout", self.key, "-out", self.cert)
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-out", self.other)

    def settings(self):
        return {"control.tls_cert": self.cert, "control.tls_key": self.key,
                "control.read_timeout": "1s"}

    def context(self):
        return ssl.create_default_context(cafile=self.cert)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def https(ctl, certs, host="localhost"):
    return http.client.HTTPSConnection(host, ctl.port, timeout=10,
                                       context=certs.context())


def get(conn, path, actor="vic"):
    conn.request("GET", path,
                 headers={"Authorization": f"Bearer {TOKENS[actor][1]}"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def test_api_over_tls():
    """GET /v1/regions over TLS with the CA; two more requests on the same
    connection; the event stream's first event; plain HTTP refused with a
    400 that says TLS is required, the service still serving after it."""
    certs = Certs()
    try:
        with Control(Topics(), certs.settings()) as ctl:
            conn = https(ctl, certs)
            status, hdrs, body = get(conn, "/v1/regions")
            assert status == 200, (status, body)
            assert "regions" in json.loads(body), body
            assert hdrs.get("connection") != "close", hdrs
            sock = conn.sock
            assert sock.version() in ("TLSv1.2", "TLSv1.3"), sock.version()
            # Keep-alive: the next requests reuse the TLS connection.
            for path in ("/v1/regions?sort=share", "/v1/regions/CU"):
                status, _, body = get(conn, path)
                assert status in (200, 404), (path, status, body)
                assert conn.sock is sock, "the server closed a keep-alive connection"
            conn.close()

            # No token over TLS: 401 as over plain HTTP.
            conn = https(ctl, certs)
            conn.request("GET", "/v1/regions")
            resp = conn.getresponse()
            assert resp.status == 401, resp.status
            resp.read()
            conn.close()

            # The event stream works over TLS: its first event is a snapshot.
            raw = socket.create_connection(("127.0.0.1", ctl.port), timeout=10)
            s = certs.context().wrap_socket(raw, server_hostname="localhost")
            s.sendall(("GET /v1/stream HTTP/1.1\r\nHost: localhost\r\n"
                       f"Authorization: Bearer {TOKENS['vic'][1]}\r\n\r\n")
                      .encode())
            got = b""
            deadline = time.monotonic() + 10
            while b"event: snapshot" not in got and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            assert got.startswith(b"HTTP/1.1 200"), got[:200]
            assert b"text/event-stream" in got and b"event: snapshot" in got, got[:400]
            s.close()

            # Plain HTTP to the TLS port: a clear answer, then the close.
            plain = socket.create_connection(("127.0.0.1", ctl.port), timeout=10)
            plain.sendall(b"GET /v1/regions HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while True:
                chunk = plain.recv(4096)
                if not chunk:
                    break
                answer += chunk
            plain.close()
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            assert b'"error":"tls_required"' in answer, answer
            assert ctl.proc.poll() is None, "the service died"
            conn = https(ctl, certs)
            assert get(conn, "/v1/regions")[0] == 200
            conn.close()
    finally:
        certs.cleanup()


def test_stalled_handshake_is_dropped():
    """A client that sends part of a ClientHello and stops is closed by the
    server at the read timeout (1 s here); TLS clients meanwhile are served
    at once."""
    certs = Certs()
    try:
        with Control(Topics(), certs.settings()) as ctl:
            stalled = socket.create_connection(("127.0.0.1", ctl.port), timeout=10)
            stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00")  # a cut ClientHello
            silent = socket.create_connection(("127.0.0.1", ctl.port), timeout=10)
            t0 = time.monotonic()
            for _ in range(3):
                conn = https(ctl, certs)
                status, _, _ = get(conn, "/v1/regions")
                conn.close()
                assert status == 200
            assert time.monotonic() - t0 < 0.9, "a stalled handshake held others up"
            for sock in (stalled, silent):
                sock.settimeout(5)
                try:
                    data = sock.recv(100)
                except ConnectionResetError:
                    data = b""
                waited = time.monotonic() - t0
                assert data == b"", data
                assert 0.5 < waited < 3.5, waited
                sock.close()
            assert ctl.proc.poll() is None
    finally:
        certs.cleanup()


def test_fleetgatectl_https():
    """fleetgatectl over https: --cacert and FLEETGATECTL_CACERT work, the
    system CAs do not know a self-signed certificate (exit 5 and a hint at
    --cacert), a certificate that does not name the host is refused (exit
    5), and https:// to a plain HTTP server is a TLS failure too."""
    certs = Certs()
    try:
        with Control(Topics(), certs.settings()) as ctl:
            url = f"https://localhost:{ctl.port}"
            rc, out, err = run_ctl(["regions", "--cacert", certs.cert],
                                   actor="vic", url=url)
            assert rc == 0, (rc, out, err)
            assert out.startswith("REGION"), out
            rc, out, err = run_ctl(["regions", "--json"], actor="vic", url=url,
                                   env_extra={"FLEETGATECTL_CACERT": certs.cert})
            assert rc == 0 and "regions" in json.loads(out), (rc, out, err)
            # watch reads GET /v1/stream through TLS: its first event.
            rc, out, err = run_ctl(["watch", "--count", "1", "--json",
                                    "--cacert", certs.cert], actor="vic", url=url)
            assert rc == 0, (rc, out, err)
            assert json.loads(out.splitlines()[0])["event"] == "snapshot", out
            rc, out, err = run_ctl(["regions"], actor="vic", url=url)
            assert rc == EXIT_TLS, (rc, out, err)
            assert "not trusted" in err and "--cacert" in err, err
            # The certificate names localhost, not 127.0.0.1.
            rc, out, err = run_ctl(["regions", "--cacert", certs.cert], actor="vic",
                                   url=f"https://127.0.0.1:{ctl.port}")
            assert rc == EXIT_TLS and "does not name 127.0.0.1" in err, (rc, err)
            # The admin listener speaks plain HTTP.
            rc, out, err = run_ctl(["regions", "--cacert", certs.cert], actor="vic",
                                   url=f"https://127.0.0.1:{ctl.admin_port}")
            assert rc == EXIT_TLS and "TLS handshake" in err, (rc, err)
            # A CA file that is not there is a usage error naming it.
            rc, out, err = run_ctl(["regions", "--cacert", certs.dir + "/none.pem"],
                                   actor="vic", url=url)
            assert rc == 2 and "none.pem" in err, (rc, err)
            # --cacert with plain http:// is a mistake worth saying.
            rc, out, err = run_ctl(["regions", "--cacert", certs.cert], actor="vic",
                                   url=f"http://127.0.0.1:{ctl.port}")
            assert rc == 2 and "https://" in err, (rc, err)
            assert ctl.proc.poll() is None
    finally:
        certs.cleanup()


def test_bad_tls_files_stop_startup():
    """Both keys or neither; a missing certificate, a key file as the
    certificate and a key of another certificate each stop start-up with a
    message naming the key at fault."""
    certs = Certs()
    exe = fgtest.build_path("fleetgate-control")

    def check(settings):
        args = [exe, "--check-config"]
        for k, v in settings.items():
            args += ["--set", f"{k}={v}"]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        return p.returncode, p.stderr.decode()

    try:
        rc, err = check({"control.tls_cert": certs.cert, "control.tls_key": certs.key})
        assert rc == 0, err
        rc, err = check({"control.tls_cert": certs.cert})
        assert rc == 2 and "control.tls_key: must be set with control.tls_cert" in err, err
        rc, err = check({"control.tls_key": certs.key})
        assert rc == 2 and "control.tls_cert:" in err, err
        missing = os.path.join(certs.dir, "missing.pem")
        rc, err = check({"control.tls_cert": missing, "control.tls_key": certs.key})
        assert rc == 2 and "control.tls_cert:" in err and missing in err, err
        assert "No such file" in err, err
        rc, err = check({"control.tls_cert": certs.key, "control.tls_key": certs.key})
        assert rc == 2 and "control.tls_cert:" in err, err
        rc, err = check({"control.tls_cert": certs.cert, "control.tls_key": certs.other})
        assert rc == 2 and "control.tls_key:" in err and "does not match" in err, err
        rc, err = check({"control.tls_cert": certs.cert, "control.tls_key": certs.cert})
        assert rc == 2 and "control.tls_key:" in err, err
    finally:
        certs.cleanup()


if __name__ == "__main__":
    fgtest.run()
