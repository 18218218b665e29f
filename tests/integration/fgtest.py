# SPDX-License-Identifier: Apache-2.0
"""Helpers for fleetgate's integration tests (stdlib + msgpack only).

They run against the real Kafka broker and redis-server that tests/run starts
(FG_TEST_KAFKA, FG_TEST_REDIS) and the binaries of the build under test
(FG_BUILD_DIR, set per build by ctest). In here: per-test topics through
fg-topics, a Gateway process wrapper with HTTP and metrics helpers, produce
and consume through kcat with exact binary framing, a tiny Redis client and
a private redis-server (RedisServer), and run(), the runner that ends with
"N passed, N failed".

A test file looks like:

    import fgtest

    def test_something():
        topic = fgtest.unique_topic("checkins", partitions=6)
        with fgtest.Gateway({"gateway.topic": topic}) as gw:
            status, headers, body = gw.post("/v1/checkin", b"{...}",
                                            {"Content-Type": "application/json"})
            assert status == 200, (status, body)
        records = fgtest.consume(topic, 1)

    if __name__ == "__main__":
        fgtest.run()
"""

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import msgpack  # noqa: F401  (re-exported for tests: fgtest.msgpack)

SOURCE_DIR = os.environ.get("FG_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get("FG_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")

# Bound on any single helper subprocess (kcat, fg-topics), in seconds.
SUBPROCESS_TIMEOUT = 60


class FgTestError(Exception):
    """A helper could not do its job (missing environment, tool failure)."""


# ---------------------------------------------------------------------------
# Environment


def _env(name, what):
    value = os.environ.get(name)
    if not value:
        raise FgTestError(f"{name} is not set ({what}); run the tests through "
                          "tests/run, which starts Kafka and Redis")
    return value


def kafka_bootstrap():
    """Bootstrap servers of the test broker (FG_TEST_KAFKA), "host:port"."""
    return _env("FG_TEST_KAFKA", "Kafka bootstrap servers")


def redis_addr():
    """(host, port) of the test redis-server (FG_TEST_REDIS)."""
    host, _, port = _env("FG_TEST_REDIS", "Redis host:port").rpartition(":")
    return host or "127.0.0.1", int(port)


def kafka_dir():
    """The broker's state directory (FG_TEST_KAFKA_DIR), for fault tests that
    stop and restart it with deploy/local/kafka-ctl."""
    return _env("FG_TEST_KAFKA_DIR", "the test broker's directory")


def build_path(name):
    """Path of a binary of the build under test, e.g. "fleetgate-gateway"."""
    return os.path.join(BUILD_DIR, name)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Calls predicate() until it returns a true value, which is returned.
    Raises AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc, sig, timeout, error):
    """Sends sig to proc unless it has exited, and waits up to timeout
    seconds for the exit; returns the exit status (negative: killed by a
    signal). A process that does not exit in time is killed, then the
    exception error() returns is raised (it can name the process and show
    its log)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise error()
    return proc.returncode


def read_log(path):
    """A daemon's log file as text ("" before it exists)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _run(cmd, input=None, timeout=SUBPROCESS_TIMEOUT):
    """Runs cmd, returns its stdout (bytes); raises FgTestError with its
    stderr when it fails."""
    try:
        p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise FgTestError(f"{cmd[0]} timed out after {timeout}s: {cmd}") from e
    if p.returncode != 0:
        raise FgTestError(f"{' '.join(cmd)} exited with {p.returncode}: "
                          f"{p.stderr.decode(errors='replace').strip()}")
    return p.stdout


# ---------------------------------------------------------------------------
# Topics (fg-topics)


def fg_topics(*args):
    """Runs fg-topics against the test broker; returns its stdout as text."""
    cmd = [build_path("fg-topics"), "-b", kafka_bootstrap(), *args]
    return _run(cmd).decode()


def create_topic(name, partitions=1, config=None):
    """Creates topic name (no-op if it exists) and waits for its leaders.
    config: dict of topic configs, e.g. {"cleanup.policy": "compact"}."""
    args = ["create", name, "--partitions", str(partitions)]
    for key, value in (config or {}).items():
        args += ["--config", f"{key}={value}"]
    fg_topics(*args)
    return name


def unique_topic(prefix="t", partitions=1, config=None):
    """Creates a topic no other test uses, so tests can run in parallel;
    returns its name ("<prefix>.<pid>.<random>")."""
    name = f"{prefix}.{os.getpid()}.{secrets.token_hex(4)}"
    return create_topic(name, partitions, config)


def topic_config(name):
    """The topic's configuration as a dict of strings (fg-topics describe)."""
    out = {}
    for line in fg_topics("describe", name).splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def list_topics():
    """{topic name: partition count} of every topic on the broker."""
    out = {}
    for line in fg_topics("list").splitlines():
        name, _, count = line.rpartition(" ")
        out[name] = int(count)
    return out


# ---------------------------------------------------------------------------
# Produce and consume (kcat)


class Record(tuple):
    """One consumed message: a (key, value, headers) tuple, so that
    `for key, value, headers in consume(...)` works, with the attributes
    key, value (bytes, or None for NULL), headers ({name: bytes}), partition,
    offset and timestamp (ms since the epoch)."""

    def __new__(cls, key, value, headers, partition=-1, offset=-1, timestamp=-1):
        self = super().__new__(cls, (key, value, headers))
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        return self

    key = property(lambda self: self[0])
    value = property(lambda self: self[1])
    headers = property(lambda self: self[2])

    def __repr__(self):
        return (f"Record(key={self[0]!r}, value={self[1]!r}, headers={self[2]!r}, "
                f"partition={self.partition}, offset={self.offset})")


# kcat output framing: a text line with the key and value lengths (-1 for
# NULL), partition, offset and timestamp; the raw key and value bytes; then
# the headers ("n=v,n=v") up to an end marker. Lengths make binary keys and
# values exact; the marker bytes (US RS LF) are not expected in headers.
_CONSUME_FORMAT = r"%K %S %p %o %T\n%k%s\n%h\x1f\x1e\n"
_RECORD_END = b"\x1f\x1e\n"


def _parse_headers(raw):
    headers = {}
    last = None
    # kcat joins headers with ',' and does not escape values: a piece without
    # '=' belongs to the previous value.
    for piece in raw.split(b",") if raw else []:
        name, eq, value = piece.partition(b"=")
        if eq and (last is None or re.fullmatch(rb"[A-Za-z0-9_.:-]+", name)):
            last = name.decode(errors="replace")
            headers[last] = value
        elif last is not None:
            headers[last] += b"," + piece
    return headers


def _parse_records(data):
    """Parses kcat output in _CONSUME_FORMAT; a truncated last record (kcat
    stopped mid-write) is dropped."""
    records = []
    pos = 0
    while pos < len(data):
        try:
            nl = data.index(b"\n", pos)
            klen, vlen, part, off, ts = (int(x) for x in data[pos:nl].split(b" "))
            pos = nl + 1
            if pos + max(klen, 0) + max(vlen, 0) + 1 > len(data):
                break
            key = data[pos:pos + klen] if klen >= 0 else None
            pos += max(klen, 0)
            value = data[pos:pos + vlen] if vlen >= 0 else None
            pos += max(vlen, 0)
            if data[pos:pos + 1] != b"\n":
                raise FgTestError(f"bad kcat framing at byte {pos}")
            end = data.index(_RECORD_END, pos + 1)
            headers = _parse_headers(data[pos + 1:end])
            pos = end + len(_RECORD_END)
        except ValueError:
            break
        records.append(Record(key, value, headers, part, off, ts))
    return records


def consume(topic, count=None, timeout=10.0, offset="beginning", partition=None):
    """Reads messages of topic from offset ("beginning", "end", a number, or
    "-N" for the last N of each partition), over all partitions unless
    partition is given.

    count=None: everything up to the current end of the topic, then returns.
    count=N: waits until N messages have arrived or timeout seconds passed,
    and returns what arrived (possibly fewer: assert on the length).
    Returns a list of Record (key, value, headers)."""
    cmd = ["kcat", "-C", "-q", "-u", "-b", kafka_bootstrap(), "-t", topic,
           "-o", str(offset), "-f", _CONSUME_FORMAT]
    if partition is not None:
        cmd += ["-p", str(partition)]
    if count is None:
        cmd += ["-e"]
    else:
        cmd += ["-c", str(count)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        # SIGTERM lets kcat flush and exit; output so far stays in the pipe.
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    if not timed_out and proc.returncode != 0:
        raise FgTestError(f"kcat consume of {topic} exited with {proc.returncode}: "
                          f"{err.decode(errors='replace').strip()}")
    if timed_out and count is None:
        raise FgTestError(f"kcat did not reach the end of {topic} in {timeout}s: "
                          f"{err.decode(errors='replace').strip()}")
    return _parse_records(out)


def _token(avoid):
    """A delimiter (ASCII letters, no NUL: kcat parses it as a C string)
    found in none of the byte strings in avoid."""
    while True:
        tok = b"~" + secrets.token_hex(12).encode() + b"~"
        if not any(tok in a for a in avoid):
            return tok


def produce(topic, key, value, partition=None, headers=None):
    """Produces one message and waits for the broker's acknowledgement.
    key: bytes or None; value: bytes, or None for a tombstone (NULL value,
    needs a key). headers: {name: str} added to the message."""
    produce_many(topic, [(key, value)], partition, headers)


def produce_many(topic, messages, partition=None, headers=None):
    """Produces [(key, value), ...] in order (see produce()); returns when
    the broker acknowledged all of them."""
    # kcat -Z turns empty values into NULL ones, so tombstones go in runs of
    # their own, keeping the order.
    run, runs = [], []
    for key, value in messages:
        if value is None and not key:
            raise ValueError("a tombstone (value None) needs a non-empty key")
        if key is None and value == b"":
            raise ValueError("kcat cannot produce an empty value without a key")
        if run and (run[-1][1] is None) != (value is None):
            runs.append(run)
            run = []
        run.append((key, value))
    if run:
        runs.append(run)
    for r in runs:
        _produce_run(topic, r, partition, headers)


def _produce_run(topic, messages, partition, headers):
    tombstones = messages[0][1] is None
    parts = [k for k, _ in messages if k] + [v for _, v in messages if v]
    kdelim = _token(parts)
    mdelim = _token(parts + [kdelim])
    stream = b"".join((b"" if key is None else key + kdelim) + (value or b"") + mdelim
                      for key, value in messages)
    cmd = ["kcat", "-P", "-b", kafka_bootstrap(), "-t", topic,
           "-K", kdelim.decode(), "-D", mdelim.decode(),
           "-X", "message.max.bytes=16777216",
           # A missing topic fails in 2 s rather than librdkafka's 30 s.
           "-X", "topic.metadata.propagation.max.ms=2000"]
    if tombstones:
        cmd.append("-Z")
    if partition is not None:
        cmd += ["-p", str(partition)]
    for name, val in (headers or {}).items():
        cmd += ["-H", f"{name}={val}"]
    _run(cmd, input=stream)


# ---------------------------------------------------------------------------
# Redis (a minimal RESP client)


class RedisError(Exception):
    """An error reply from Redis."""


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise FgTestError("connection to Redis closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise FgTestError(f"unexpected Redis reply {line!r}")


def _redis_call(addr, args, timeout):
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    req = b"*%d\r\n" % len(parts) + b"".join(
        b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(req)
        with s.makefile("rb") as f:
            return _resp_read(f)


def redis(*args, timeout=5.0):
    """Runs one command on the test redis-server and returns the reply:
    str (status), int, bytes, None or list; raises RedisError on an error.
    redis("HGETALL", "key") -> [b"field", b"value", ...]"""
    return _redis_call(redis_addr(), args, timeout)


class RedisServer:
    """A redis-server of a test's own, for state no other test may share or
    for killing it: started by deploy/local/redis-ctl (appendfsync always,
    state, log and PID in a temp dir) on a free port, and stopped by PID.
    call(*args) runs one command as redis() does. A context manager; or
    close() it."""

    CTL = os.path.join(SOURCE_DIR, "deploy", "local", "redis-ctl")

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fg-redis-")
        # Another test may take the port between free_port() and the bind;
        # redis-ctl then fails (it checks the server is its own): retry.
        for attempt in range(5):
            self.port = free_port()
            try:
                self.start()
                break
            except FgTestError:
                if attempt == 4:
                    shutil.rmtree(self.dir, ignore_errors=True)
                    raise

    def _ctl(self, *args):
        p = subprocess.run([self.CTL, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=SUBPROCESS_TIMEOUT)
        if p.returncode != 0:
            raise FgTestError(f"redis-ctl {' '.join(args)}: "
                              + p.stdout.decode(errors="replace"))

    def start(self):
        """Starts (or restarts: same port and dir) and waits until the
        server on the port is this one."""
        self._ctl("start", self.dir, str(self.port))

    def pid(self):
        with open(os.path.join(self.dir, "redis.pid")) as f:
            return int(f.read())

    def signal(self, sig):
        """Sends sig (SIGSTOP, SIGCONT...) to the server."""
        os.kill(self.pid(), sig)

    def kill9(self):
        """SIGKILL, then waits until the process is gone (start() brings
        it back with its data)."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)

        def gone():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rpartition(")")[2].split()[0] == "Z"
            except FileNotFoundError:
                return True
        wait_until(gone, 10, what="redis-server to die")

    def call(self, *args, timeout=5.0):
        """One command; the reply as redis() returns it."""
        return _redis_call(("127.0.0.1", self.port), args, timeout)

    def log_tail(self, lines=20):
        text = read_log(os.path.join(self.dir, "redis.log"))
        return "\n".join(text.splitlines()[-lines:])

    def close(self):
        """Stops the server (redis-ctl stop) and removes the dir."""
        try:
            self._ctl("stop", self.dir)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.close()
        except FgTestError:
            if exc_type is None:  # never hide the test's own failure
                raise
        return False


# ---------------------------------------------------------------------------
# The gateway


def parse_metrics(text):
    """Parses the Prometheus text format into {series: value}, series being
    the name with its labels as rendered ('fg_x_total{code="200"}')."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            cut = line.rindex("}") + 1
            series, rest = line[:cut], line[cut:].split()
        else:
            series, *rest = line.split()
        if rest:
            out[series] = float(rest[0])
    return out


_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(metrics, name, default=0.0, **labels):
    """The value of series name{labels} in a parse_metrics() dict, matching
    the labels as a set (order free); default when absent."""
    for series, value in metrics.items():
        base, _, rest = series.partition("{")
        if base != name:
            continue
        if dict(_LABEL_RE.findall(rest)) == {k: str(v) for k, v in labels.items()}:
            return value
    return default


class GatewayError(Exception):
    """The gateway failed to start or to stop."""


class Gateway:
    """A fleetgate-gateway process with its own config file and log.

    config: {"section.key": value} merged over the defaults: listen and
    admin_listen on free ports, a fresh topic (6 partitions) and a fresh
    compacted locks topic, kafka.bootstrap.servers = FG_TEST_KAFKA. A value
    of None drops the key (to test the built-in default).
    args: extra command-line arguments; env: extra environment variables.
    Starts at construction unless start=False; use it as a context manager so
    it is stopped (and its log shown when the block raised)."""

    def __init__(self, config=None, args=(), env=None, start=True,
                 ready_timeout=30.0, binary=None):
        self.binary = binary or build_path("fleetgate-gateway")
        settings = {
            "gateway.listen": f"127.0.0.1:{free_port()}",
            "gateway.admin_listen": f"127.0.0.1:{free_port()}",
            "kafka.bootstrap.servers": kafka_bootstrap(),
        }
        config = dict(config or {})
        if "gateway.topic" not in config:
            settings["gateway.topic"] = unique_topic("checkins", partitions=6)
        if "gateway.locks_topic" not in config:
            settings["gateway.locks_topic"] = unique_topic(
                "locks", partitions=1, config={"cleanup.policy": "compact"})
        settings.update(config)
        self.config = {k: v for k, v in settings.items() if v is not None}
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.ready_timeout = ready_timeout
        self.proc = None
        self._logf = None
        self.dir = tempfile.mkdtemp(prefix="fg-gateway-")
        self.config_path = os.path.join(self.dir, "gateway.ini")
        self.log_path = os.path.join(self.dir, "gateway.log")
        self.write_config()
        if start:
            self.start()

    # -- addresses

    @staticmethod
    def _port(hostport):
        return int(str(hostport).rpartition(":")[2])

    @property
    def port(self):
        """The devices port (gateway.listen)."""
        return self._port(self.config["gateway.listen"])

    @property
    def admin_port(self):
        """The admin port (gateway.admin_listen)."""
        return self._port(self.config["gateway.admin_listen"])

    @property
    def topic(self):
        return self.config.get("gateway.topic")

    @property
    def locks_topic(self):
        return self.config.get("gateway.locks_topic")

    # -- lifecycle

    def write_config(self):
        """(Re)writes the INI file from self.config: "section.key" becomes
        key in [section]."""
        sections = {}
        for dotted, value in self.config.items():
            section, dot, key = dotted.partition(".")
            if not dot or not key:
                raise ValueError(f"config key {dotted!r} is not section.key")
            if isinstance(value, bool):
                value = "true" if value else "false"
            sections.setdefault(section, []).append(f"{key} = {value}")
        text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n\n"
                       for s, lines in sections.items())
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self):
        """Starts the process and waits until GET /readyz answers 200.
        Raises GatewayError with the log tail when it exits or is not ready
        within ready_timeout seconds."""
        if not os.access(self.binary, os.X_OK):
            raise GatewayError(f"{self.binary} not built")
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.config_path, *self.args],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise GatewayError(f"gateway exited with {rc} during start-up\n"
                                   + self.log_tail())
            try:
                status, _, _ = self.request("GET", "/readyz", admin=True, timeout=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.stop(signal.SIGKILL)
                raise GatewayError(f"gateway not ready in {self.ready_timeout}s\n"
                                   + self.log_tail())
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        """Sends sig (SIGHUP, SIGSTOP...) to the process."""
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends sig and waits up to timeout seconds for the exit; returns
        the exit status (negative: killed by that signal). If it does not
        exit in time it is killed and GatewayError is raised."""
        if self.proc is None:
            return None
        try:
            return stop_process(self.proc, sig, timeout, lambda: GatewayError(
                f"gateway did not exit within {timeout}s of signal {sig}: killed\n"
                + self.log_tail()))
        finally:
            if self._logf:
                self._logf.close()
                self._logf = None

    def close(self):
        """Stops the process if needed (SIGKILL) and removes the temp dir."""
        if self.running():
            self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                sys.stderr.write(f"--- gateway log ({self.log_path}) ---\n"
                                 + self.log_tail() + "\n")
            if self.running():
                self.stop()
        finally:
            self.close()
        return False

    # -- logs

    def log(self):
        """The whole log (stdout and stderr) as text."""
        return read_log(self.log_path)

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    # -- HTTP

    def request(self, method, path, body=None, headers=None, admin=False, timeout=10.0):
        """One HTTP request on its own connection; returns (status,
        {lower-case header name: value}, body bytes)."""
        port = self.admin_port if admin else self.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def post(self, path, body, headers=None, timeout=10.0):
        """POST body (bytes) to the devices port."""
        return self.request("POST", path, body, headers, timeout=timeout)

    def get(self, path, admin=False, timeout=10.0):
        return self.request("GET", path, admin=admin, timeout=timeout)

    def post_json(self, path, obj, headers=None):
        h = {"Content-Type": "application/json", **(headers or {})}
        return self.post(path, json.dumps(obj).encode(), h)

    def post_msgpack(self, path, obj, headers=None):
        h = {"Content-Type": "application/msgpack", **(headers or {})}
        return self.post(path, msgpack.packb(obj, use_bin_type=True), h)

    def metrics(self):
        """GET /metrics on the admin port, parsed: {series: value}."""
        status, _, body = self.get("/metrics", admin=True)
        if status != 200:
            raise GatewayError(f"GET /metrics answered {status}")
        return parse_metrics(body.decode())

    def metric(self, name, default=0.0, **labels):
        """One series of metrics(), e.g. gw.metric("fg_requests_total",
        code="200")."""
        return metric(self.metrics(), name, default, **labels)


# ---------------------------------------------------------------------------
# Device load against a gateway (fault and shutdown tests)


class Result:
    """One request of a Load client: send and answer times, device ids,
    status, Retry-After, body, the ids answered ok, or the client error."""

    __slots__ = ("t0", "t1", "ids", "status", "retry_after", "body", "ok_ids", "error")

    def __init__(self, t0, ids):
        self.t0, self.t1, self.ids = t0, None, ids
        self.status = self.retry_after = self.body = self.error = None
        self.ok_ids = []

    def __repr__(self):
        return (f"Result(t0={self.t0:.2f}, t1={self.t1:.2f}, status={self.status}, "
                f"ids={self.ids[:2]}, error={self.error!r}, body={self.body!r:.120})")


class Load:
    """Client threads posting check-ins with fresh device ids on keep-alive
    connections; the first `batchers` threads post batches of `batch`.
    Every answer (or connection error) is kept with its times."""

    def __init__(self, gw, threads=4, batchers=1, batch=3, sku="US", region="US",
                 tag="d", pause=0.02, timeout=20.0):
        self.port = gw.port
        self.n, self.batchers, self.batch = threads, batchers, batch
        self.sku, self.region, self.tag = sku, region, tag
        self.pause, self.timeout = pause, timeout
        self.results = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []

    def start(self):
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 10)
            assert not t.is_alive(), "a client thread is stuck"

    def _run(self, i):
        conn = None
        seq = 0
        while not self.stop_ev.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            batch = i < self.batchers
            ids = [f"{self.tag}-{i}-{seq}-{k}" for k in range(self.batch if batch else 1)]
            seq += 1
            items = [{"device_id": d, "sku_region": self.sku, "region": self.region,
                      "seq": seq} for d in ids]
            body = json.dumps(items if batch else items[0]).encode()
            res = Result(time.monotonic(), ids)
            try:
                conn.request("POST", "/v1/checkins" if batch else "/v1/checkin", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                res.body = resp.read()
                res.status = resp.status
                res.retry_after = resp.getheader("Retry-After")
                if resp.status == 200:
                    if batch:
                        answers = json.loads(res.body)["results"]
                        assert len(answers) == len(ids), res
                        res.ok_ids = [d for d, a in zip(ids, answers) if a["status"] == "ok"]
                    else:
                        res.ok_ids = ids
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                res.error = f"{type(e).__name__}: {e}"
                conn.close()
                conn = None
                time.sleep(0.02)
            res.t1 = time.monotonic()
            with self.lock:
                self.results.append(res)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.results)


def ok_ids(results):
    """Every device id some Result was answered ok for."""
    return {d for r in results for d in r.ok_ids}


def assert_all_stored(topic, results):
    """Every id answered ok is a key on topic; returns (wanted, found)."""
    want = ok_ids(results)
    got = {r.key.decode() for r in consume(topic, timeout=60)}
    missing = want - got
    assert not missing, (f"{len(missing)} of {len(want)} check-ins answered 200 are not in "
                         f"the topic, e.g. {sorted(missing)[:5]}")
    return want, got


# ---------------------------------------------------------------------------
# Runner


def run(tests=None):
    """Runs the test_* functions of tests (a module's globals() or a list of
    functions; default: the __main__ module's), in definition order, or only
    those whose names contain one of the command-line arguments. Prints "ok"
    or "FAIL" with the traceback for each, then "N passed, N failed", and
    exits 1 when any failed or none ran."""
    if tests is None:
        tests = vars(sys.modules["__main__"])
    if isinstance(tests, dict):
        fns = [v for k, v in tests.items() if k.startswith("test_") and callable(v)]
    else:
        fns = list(tests)
    wanted = sys.argv[1:]
    if wanted:
        fns = [f for f in fns if any(w in f.__name__ for w in wanted)]
    passed = failed = 0
    for fn in fns:
        t0 = time.monotonic()
        try:
            fn()
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: B036 (SystemExit in a test is a failure too)
            failed += 1
            print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.2f}s)", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        else:
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - t0:.2f}s)", flush=True)
    if not fns:
        print("no tests ran", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not fns else 0)
