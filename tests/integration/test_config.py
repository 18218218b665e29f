# SPDX-License-Identifier: Apache-2.0
"""fleetgate-gateway's configuration as an operator meets it: --help, start-up
refused (quickly, naming the key) for unknown keys and bad values from the
INI file, FLEETGATE_* variables and --set, the order in which those sources
win, and a clean SIGTERM exit with structured (logfmt) logs."""

import atexit
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import fgtest

# The keys every build must document; the source's slot table is read too so
# that a key added later is checked without editing this list.
KNOWN_KEYS = [
    "gateway.listen", "gateway.admin_listen", "gateway.id", "gateway.topic",
    "gateway.locks_topic", "gateway.ack", "gateway.threads", "gateway.max_body",
    "gateway.max_batch", "gateway.max_header_bytes", "gateway.max_connections",
    "gateway.read_timeout", "gateway.idle_timeout", "gateway.write_timeout",
    "gateway.shutdown_timeout", "gateway.next_checkin_s", "gateway.retry_after_s",
    "gateway.broker_down_after",
]

FAIL_WITHIN_S = 5.0


class Gateway(fgtest.Gateway):
    """fgtest.Gateway that also requires a clean exit (status 0) on SIGTERM
    when the block did not raise: a crash, a hang or a sanitizer report at
    shutdown fails the test that caused it."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.running():
            rc = self.stop()
            if rc != 0:
                tail = self.log_tail()
                super().__exit__(None, None, None)
                raise AssertionError(f"gateway exited with {rc} on SIGTERM\n{tail}")
        return super().__exit__(exc_type, exc, tb)


def binary():
    return fgtest.build_path("fleetgate-gateway")


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
    env.update(extra or {})
    return env


def run(args, env=None, timeout=10.0):
    """Runs the gateway to completion; returns (rc, stdout, stderr, seconds).
    A gateway still running after timeout is killed and the test fails."""
    t0 = time.monotonic()
    try:
        p = subprocess.run([binary(), *args], stdin=subprocess.DEVNULL,
                           capture_output=True, env=clean_env(env), timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{args} still running after {timeout}s: "
                             f"{(e.stderr or b'').decode(errors='replace')[-2000:]}") from None
    return (p.returncode, p.stdout.decode(errors="replace"),
            p.stderr.decode(errors="replace"), time.monotonic() - t0)


def write_ini(text):
    fd, path = tempfile.mkstemp(prefix="fg-config-", suffix=".ini")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    atexit.register(os.unlink, path)
    return path


def base_ini(extra_gateway="", extra=""):
    """A configuration that would start (free ports, the test broker)."""
    return (f"[gateway]\nlisten = 127.0.0.1:{fgtest.free_port()}\n"
            f"admin_listen = 127.0.0.1:{fgtest.free_port()}\n"
            f"threads = 1\n{extra_gateway}\n"
            f"[kafka]\nbootstrap.servers = {fgtest.kafka_bootstrap()}\n{extra}")


def assert_refused(args, names, env=None):
    """The gateway exits non-zero within FAIL_WITHIN_S, and its stderr names
    one of names (str or tuple)."""
    if isinstance(names, str):
        names = (names,)
    rc, out, err, took = run(args, env)
    assert rc != 0, (args, env, rc, out, err)
    assert took < FAIL_WITHIN_S, (args, env, took)
    assert any(n in err for n in names), (args, env, names, err)
    assert "started" not in err, err
    return err


def with_file(text, *args):
    path = write_ini(text)
    return ["-c", path, *args], path


# ---------------------------------------------------------------------------


def test_help_documents_every_key():
    rc, out, err, took = run(["--help"])
    assert rc == 0, (rc, err)
    assert took < FAIL_WITHIN_S
    src = os.path.join(fgtest.SOURCE_DIR, "gateway", "gw_config.c")
    with open(src) as f:
        slots = re.findall(r'GW_SLOT\(\s*"([a-z_.]+)"', f.read())
    assert len(slots) >= len(KNOWN_KEYS), slots
    keys = sorted(set(KNOWN_KEYS) | {k for k in slots if k.startswith("gateway.")})
    for key in keys:
        line = re.search(rf"^\s*{re.escape(key)} = .*$", out, re.M)
        assert line, (key, out)
        env = "FLEETGATE_" + key.upper().replace(".", "_")
        assert env in line.group(0), (key, line.group(0))
        # Each key has a description line under it.
        after = out[line.end():].lstrip("\n").splitlines()[0]
        assert after.strip() and not after.lstrip().startswith("gateway."), (key, after)
    for word in ("log.level", "kafka.", "markets.", "--set", "--config", "FLEETGATE_"):
        assert word in out, (word, out)
    rc, out, err, _ = run(["-h"])
    assert rc == 0 and "gateway.listen" in out
    rc, out, err, _ = run(["--version"])
    assert rc == 0 and out.startswith("fleetgate-gateway "), (rc, out)


def test_unknown_keys_refused():
    args, path = with_file(base_ini("no_such_key = 1\n"))
    err = assert_refused(args, "gateway.no_such_key")
    assert path in err, err  # the file is named too
    # A near miss is named, with a hint.
    args, _ = with_file(base_ini("listn = 127.0.0.1:1\n"))
    err = assert_refused(args, "gateway.listn")
    assert "gateway.listen" in err, err
    # An unknown section.
    args, _ = with_file(base_ini() + "[gatway]\nthreads = 2\n")
    assert_refused(args, "gatway.threads")
    # A key outside any section.
    args, _ = with_file("threads = 2\n" + base_ini())
    assert_refused(args, "threads")
    # --set.
    args, _ = with_file(base_ini(), "--set", "gateway.bogus_key=1")
    assert_refused(args, "gateway.bogus_key")
    args, _ = with_file(base_ini(), "--set", "gateway.threads")
    assert_refused(args, "gateway.threads")
    # FLEETGATE_* environment variables.
    args, _ = with_file(base_ini())
    assert_refused(args, ("FLEETGATE_GATEWAY_BOGUS_KEY", "gateway.bogus_key"),
                   env={"FLEETGATE_GATEWAY_BOGUS_KEY": "1"})
    assert_refused(args, ("FLEETGATE_GATEWAYLISTEN",),
                   env={"FLEETGATE_GATEWAYLISTEN": "127.0.0.1:1"})
    # A missing file.
    assert_refused(["-c", "/nonexistent/fleetgate.ini"], "/nonexistent/fleetgate.ini")
    # The valid base itself is accepted (so the refusals above are about the key).
    args, _ = with_file(base_ini(), "--check-config")
    rc, out, err, _ = run(args)
    assert rc == 0 and "configuration ok" in out, (rc, out, err)


def test_bad_values_refused():
    cases = [
        ("threads", "abc"), ("threads", "-1"), ("threads", "257"),
        ("ack", "maybe"), ("max_body", "10"), ("max_body", "lots"),
        ("read_timeout", "soon"), ("idle_timeout", "0"), ("next_checkin_s", "0"),
        ("max_connections", "1.5"), ("retry_after_s", ""),
    ]
    for key, value in cases:
        full = f"gateway.{key}"
        args, _ = with_file(base_ini(f"{key} = {value}\n"))
        assert_refused(args, full)
        args, _ = with_file(base_ini(), "--set", f"{full}={value}")
        assert_refused(args, full)
        env_name = "FLEETGATE_" + full.upper().replace(".", "_")
        args, _ = with_file(base_ini())
        assert_refused(args, (full, env_name), env={env_name: value})
    args, _ = with_file(base_ini(), "--set", "log.level=loud")
    assert_refused(args, "log.level")
    args, _ = with_file(base_ini(), "--set", f"gateway.id={'x' * 65}")
    assert_refused(args, "gateway.id")
    # The market map: bad market name, bad country.
    args, _ = with_file(base_ini(extra="[markets]\neu = DE\n"))
    assert_refused(args, "markets.eu")
    args, _ = with_file(base_ini(extra="[markets]\nEU = Germany\n"))
    assert_refused(args, "markets.EU")


def test_kafka_keys_checked():
    args, _ = with_file(base_ini(extra="no.such.property = 1\n"))
    assert_refused(args, "no.such.property")
    args, _ = with_file(base_ini(), "--set", "kafka.no.such.property=1")
    assert_refused(args, "no.such.property")
    args, _ = with_file(base_ini())
    assert_refused(args, "no.such.property", env={"FLEETGATE_KAFKA_NO_SUCH_PROPERTY": "1"})
    # Durability cannot be turned off.
    args, _ = with_file(base_ini(extra="enable.idempotence = false\n"))
    assert_refused(args, "kafka.enable.idempotence")
    args, _ = with_file(base_ini(), "--set", "kafka.enable.idempotence=false")
    assert_refused(args, "kafka.enable.idempotence")
    args, _ = with_file(base_ini())
    assert_refused(args, "kafka.enable.idempotence",
                   env={"FLEETGATE_KAFKA_ENABLE_IDEMPOTENCE": "false"})
    args, _ = with_file(base_ini(), "--set", "kafka.acks=1")
    assert_refused(args, "kafka.acks")
    args, _ = with_file(base_ini(), "--set", "kafka.request.required.acks=0")
    assert_refused(args, "kafka.request.required.acks")
    # A bad value of a real property is named as well.
    args, _ = with_file(base_ini(), "--set", "kafka.linger.ms=abc")
    assert_refused(args, "linger.ms")
    # Explicitly asking for what the gateway needs is fine.
    args, _ = with_file(base_ini(extra="enable.idempotence = true\nacks = all\n"),
                        "--check-config")
    rc, out, err, _ = run(args)
    assert rc == 0, (rc, out, err)


def _next_checkin(gw):
    status, _, body = gw.post_json("/v1/checkin", {"device_id": "prec", "sku_region": "CU",
                                                  "region": "CU"})
    assert status == 200, (status, body)
    return json.loads(body)["next_checkin_s"]


def test_sources_precedence():
    topic = fgtest.unique_topic("checkins", partitions=1)
    locks = fgtest.unique_topic("locks", 1, {"cleanup.policy": "compact"})
    base = {"gateway.topic": topic, "gateway.locks_topic": locks, "gateway.threads": 1,
            "gateway.next_checkin_s": 111}
    env = {"FLEETGATE_GATEWAY_NEXT_CHECKIN_S": "222"}
    setarg = ["--set", "gateway.next_checkin_s=333"]
    with Gateway(base, env=clean_env()) as gw:
        assert _next_checkin(gw) == 111
    with Gateway(base, env=clean_env(env)) as gw:
        assert _next_checkin(gw) == 222
    with Gateway(base, env=clean_env(env), args=setarg) as gw:
        assert _next_checkin(gw) == 333
    # The last --set of a key wins.
    with Gateway(base, env=clean_env(),
                        args=setarg + ["--set", "gateway.next_checkin_s=444"]) as gw:
        assert _next_checkin(gw) == 444
    # Without any source the default applies.
    with Gateway({**base, "gateway.next_checkin_s": None}, env=clean_env()) as gw:
        assert _next_checkin(gw) == 300
    records = fgtest.consume(topic, 5)
    assert len(records) == 5, records


_LOGFMT = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def parse_logfmt(line):
    pos, out = 0, {}
    while pos < len(line):
        m = _LOGFMT.match(line, pos)
        assert m, (line, pos)
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def test_sigterm_idle_exits_cleanly():
    with Gateway({"gateway.threads": 2, "gateway.id": "sigterm-gw"},
                        env=clean_env()) as gw:
        assert _next_checkin(gw) == 300
        t0 = time.monotonic()
        rc = gw.stop(signal.SIGTERM, timeout=10)
        took = time.monotonic() - t0
        log = gw.log()
    assert rc == 0, (rc, log)
    assert took < 2.0, took
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "no log lines"
    events = []
    for line in lines:
        fields = parse_logfmt(line)
        assert list(fields)[:3] == ["ts", "level", "comp"] or \
            list(fields)[:2] == ["ts", "level"], line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"]), line
        assert fields["level"] in ("debug", "info", "warn", "error"), line
        assert fields.get("msg"), line
        events.append(fields)
    msgs = [e["msg"] for e in events]
    for wanted in ("started", "shutdown", "stopped"):
        assert wanted in msgs, (wanted, msgs)
    assert msgs.index("started") < msgs.index("shutdown") < msgs.index("stopped"), msgs
    started = events[msgs.index("started")]
    assert started.get("id") == "sigterm-gw", started
    assert not [e for e in events if e["level"] == "error"], log


if __name__ == "__main__":
    fgtest.run()
