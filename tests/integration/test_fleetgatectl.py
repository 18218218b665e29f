# SPDX-License-Identifier: Apache-2.0
"""fleetgatectl (issue 4) as an operator uses it against a real
fleetgate-control (the Control starter of test_control.py, per-test topics):
the regions table and --json, a dry-run lock that changes nothing, lock,
a dry-run unlock and unlock-all that list the devices held back, unlock
with a pin, unlock-all as admin, a policy reset (a tombstone on the
policies topic), watch (live over GET /v1/stream: a
lock made meanwhile shows up at once; --json event lines) and Ctrl-C, and the exit
codes: 2 for usage errors (a --token flag above all), 3 for a missing or
weak token, 4 for what the server does not know."""

import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time

import fgtest
from test_control import TOKENS, Control, Topics, now_ms, publish_scores
from test_scorer_decisions import lock_records

CLEAR = "\033[H\033[2J"


def ctl_exe():
    return fgtest.build_path("fleetgatectl")


def run_ctl(args, actor=None, url=None, env_extra=None, timeout=30):
    """Runs fleetgatectl with a clean environment (HOME without a token
    file); actor's token goes in FLEETGATE_TOKEN. Returns (rc, out, err)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
    env["HOME"] = run_ctl.home
    if actor:
        env["FLEETGATE_TOKEN"] = TOKENS[actor][1]
    if url:
        env["FLEETGATE_URL"] = url
    env.update(env_extra or {})
    p = subprocess.run([ctl_exe()] + args, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


run_ctl.home = tempfile.mkdtemp(prefix="fg-ctl-home-")


def table_rows(out):
    """The table's lines split into cells, header first."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("REGION"), out
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines]


def read_until(p, got, pred, timeout=10):
    """Reads p's stdout into got (a list of byte chunks) until pred(text)
    holds for all of it; returns the text."""
    deadline = time.monotonic() + timeout
    while True:
        text = b"".join(got).decode(errors="replace")
        if pred(text):
            return text
        left = deadline - time.monotonic()
        assert left > 0 and p.poll() is None, (p.poll(), text)
        ready, _, _ = select.select([p.stdout], [], [], left)
        if ready:
            data = os.read(p.stdout.fileno(), 65536)
            assert data, ("watch ended", text)
            got.append(data)


def region_locks(topic, region):
    return [lk for _, lk in lock_records(topic) if lk.get("region") == region]


def test_usage_errors_need_no_server():
    """Usage errors exit 2 before any network traffic (the URL points at a
    closed port, which would give 1); a token in argv is refused with why."""
    dead = f"http://127.0.0.1:{fgtest.free_port()}"
    rc, out, err = run_ctl(["--help"])
    assert rc == 0 and "Exit codes" in out and "--token-file" in out, out
    for args in (["regions", "--token", "secret-token"],
                 ["--token=secret-token", "regions"]):
        rc, out, err = run_ctl(args, url=dead)
        assert rc == 2, (args, rc, err)
        assert "refusing a token on the command line" in err, err
        assert "FLEETGATE_TOKEN" in err and "secret-token" not in err + out, err
    bad = [
        [],
        ["frobnicate"],
        ["lock", "CU"],                            # no --reason
        ["lock", "CU", "--reason", "r", "--ttl", "soon"],
        ["lock", "CU", "--reason", "r", "--scope", "most"],
        ["unlock"],                                # no region
        ["regions", "--sort", "name"],
        ["regions", "--pin", "1h"],                # option of another command
        ["region", "CU", "DE"],
        ["region", "../admin"],
        ["watch", "--count", "0"],
        ["policy", "CU"],
        ["policy", "CU", "novalue"],
        ["policy", "CU", "--reset"],               # no --reason
        ["policy", "CU", "--reset", "--reason", "r", "mode=never"],
        ["lock", "CU", "--reason", "r", "--reset"],  # option of another command
        ["regions", "--url", "ftp://127.0.0.1:8081"],
        ["regions", "--cacert", "/dev/null"],      # --cacert needs https://
    ]
    for args in bad:
        rc, out, err = run_ctl(args, actor="alice", url=dead)
        assert rc == 2, (args, rc, out, err)
        assert err.strip(), args
    # A remote host is refused unless --allow-remote (then it is a network
    # error: nothing listens on TEST-NET-1, and the connect times out).
    rc, _, err = run_ctl(["regions", "--url", "http://192.0.2.1:8081"], actor="vic")
    assert rc == 2 and "--allow-remote" in err, err
    rc, _, err = run_ctl(["regions", "--url", "http://192.0.2.1:8081",
                          "--allow-remote", "--timeout", "300ms"], actor="vic")
    assert rc == 1, (rc, err)
    rc, _, err = run_ctl(["regions"], actor="vic", url=dead)
    assert rc == 1 and "connect" in err, err


def test_operator_session():
    topics = Topics()
    with Control(topics) as ctl:
        url = f"http://127.0.0.1:{ctl.port}"
        publish_scores(topics, [("CU", 200, 190), ("US", 500, 10), ("DE", 100, 60)])
        fgtest.wait_until(lambda: ctl.call("GET", "/v1/regions", "vic")[2]["count"] == 3,
                          what="three score rows in the table")

        # The table: header, aligned columns, sorted by share.
        rc, out, err = run_ctl(["regions", "--sort", "share"], "vic", url)
        assert rc == 0, (rc, err)
        rows = table_rows(out)
        assert rows[0] == ["REGION", "STATE", "DEVICES", "GREY", "LO-HI", "UNTIL",
                           "MODE"], rows[0]
        assert [r[0] for r in rows[1:]] == ["CU", "DE", "US"], out
        assert rows[1] == ["CU", "unlocked", "200", "95.0% (190)", "85.0-100.0%", "-",
                           "auto"], rows[1]
        lines = out.splitlines()
        col = lines[0].index("DEVICES") + len("DEVICES")
        assert all(ln[col - 1].isdigit() for ln in lines[1:]), out  # right-aligned
        # --json: the server's answer as is.
        rc, out, err = run_ctl(["--json", "regions", "--sort", "devices"], "vic", url)
        assert rc == 0, err
        body = json.loads(out)
        assert [r["region"] for r in body["regions"]] == ["US", "CU", "DE"], body
        rc, out, _ = run_ctl(["region", "CU"], "vic", url)
        assert rc == 0 and re.search(r"^devices\s+200$", out, re.M), out

        # Not found: an unknown region, and a route this server may lack
        # (approve of an unknown request is 404 either way).
        rc, out, err = run_ctl(["region", "XX"], "vic", url)
        assert rc == 4 and "unknown_region" in err, (rc, err)
        rc, out, err = run_ctl(["approve", "req-0000000000000000"], "root", url)
        assert rc == 4 and "404" in err, (rc, err)

        # Unauthorized and forbidden: 3, and nothing written.
        rc, _, err = run_ctl(["lock", "CU", "--reason", "test"], None, url)
        assert rc == 3 and "401" in err and "FLEETGATE_TOKEN" in err, (rc, err)
        rc, _, err = run_ctl(["lock", "CU", "--reason", "test"], "vic", url)
        assert rc == 3 and "403" in err and "forbidden" in err, (rc, err)
        rc, _, err = run_ctl(["regions"], None, url,
                             {"FLEETGATE_TOKEN": "wrong-" + TOKENS["vic"][1]})
        assert rc == 3, (rc, err)

        # A dry run says what it would do and changes nothing.
        rc, out, err = run_ctl(["lock", "CU", "--reason", "INC-42", "--ttl", "10m",
                                "--dry-run"], "alice", url)
        assert rc == 0, (rc, err)
        assert "dry run" in out and "190 devices" in out and "nothing changed" in out, out
        rc, out, _ = run_ctl(["--json", "lock", "CU", "--reason", "INC-42",
                              "--dry-run"], "alice", url)
        assert rc == 0 and json.loads(out)["would_write"]["state"] == "locked", out
        time.sleep(0.3)
        assert region_locks(topics.locks, "CU") == []
        assert ctl.call("GET", "/v1/regions/CU", "vic")[2]["state"] == "unlocked"

        # Lock: on the topic, in the table with a countdown.
        rc, out, err = run_ctl(["lock", "CU", "--reason", "INC-42", "--ttl", "10m",
                                "--scope", "grey", "--message", "Paused in CU."],
                               "alice", url)
        assert rc == 0, (rc, err)
        assert out.startswith("locked CU (scope grey) for 10m00s") or \
            out.startswith("locked CU (scope grey) for 9m5"), out
        assert "audited yes" in out, out
        recs = region_locks(topics.locks, "CU")
        assert len(recs) == 1 and recs[0]["state"] == "locked", recs
        assert recs[0]["actor"] == "alice" and recs[0]["reason"] == "INC-42", recs
        assert recs[0]["message"] == "Paused in CU.", recs
        assert recs[0]["until"] - recs[0]["since"] == 600 * 1000, recs
        rc, out, _ = run_ctl(["regions", "--state", "locked"], "vic", url)
        rows = table_rows(out)
        assert len(rows) == 2 and rows[1][:2] == ["CU", "locked"], out
        assert re.fullmatch(r"(10m00s|9m[0-5]\ds)", rows[1][5]), rows[1]

        # An unlock dry run: the devices the lock holds back, and nothing
        # changes.
        n_cu = len(region_locks(topics.locks, "CU"))
        rc, out, err = run_ctl(["unlock", "CU", "--reason", "what if", "--pin", "1h",
                                "--dry-run"], "alice", url)
        assert rc == 0, (rc, err)
        lines = out.splitlines()
        assert lines[0] == "dry run: would unlock CU, 190 devices held back now, " \
            "pinned for 1h00m; nothing changed", out
        assert [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:3]] == \
            [["REGION", "STATE", "SCOPE", "DEVICES"], ["CU", "locked", "grey", "190"]], out
        assert re.match(r"request req-[0-9a-f]{16}, audited yes$", lines[3]), out
        rc, out, err = run_ctl(["--json", "unlock", "CU", "--reason", "what if",
                                "--dry-run"], "alice", url)
        assert rc == 0, (rc, err)
        body = json.loads(out)
        assert body["dry_run"] is True and body["estimated_devices"] == 190, body
        assert body["would_write"]["state"] == "unlocked", body
        assert body["regions"] == [{"region": "CU", "state": "locked", "scope": "grey",
                                    "estimated_devices": 190}], body
        time.sleep(0.3)
        assert len(region_locks(topics.locks, "CU")) == n_cu
        assert ctl.call("GET", "/v1/regions/CU", "vic")[2]["state"] == "locked"

        # Unlock with a pin.
        rc, out, err = run_ctl(["unlock", "CU", "--reason", "false alarm",
                                "--pin", "1h"], "alice", url)
        assert rc == 0 and out.startswith("unlocked CU, pinned for"), (rc, out, err)
        last = region_locks(topics.locks, "CU")[-1]
        assert last["state"] == "unlocked" and last["reason"] == "false alarm", last
        assert abs(last["pin_until"] - (now_ms() + 3600 * 1000)) < 60000, last
        rc, out, _ = run_ctl(["--json", "region", "CU"], "vic", url)
        assert rc == 0 and json.loads(out)["state"] == "unlocked", out

        # unlock-all: admin only; the admin's token from a file.
        for region in ("CU", "US"):
            rc, _, err = run_ctl(["lock", region, "--reason", "wave"], "alice", url)
            assert rc == 0, err
        rc, _, err = run_ctl(["unlock-all", "--reason", "rollback"], "alice", url)
        assert rc == 3 and "needs role admin" in err, (rc, err)
        tokfile = os.path.join(run_ctl.home, "admin-token")
        with open(tokfile, "w") as f:
            f.write(TOKENS["root"][1] + "\n")
        os.chmod(tokfile, 0o600)
        rc, out, err = run_ctl(["unlock-all", "--reason", "rollback", "--dry-run"],
                               "alice", url)
        assert rc == 3 and "needs role admin" in err, (rc, err)
        rc, out, err = run_ctl(["unlock-all", "--reason", "rollback", "--dry-run",
                                "--token-file", tokfile], None, url)
        assert rc == 0, (rc, err)
        lines = out.splitlines()
        assert lines[0] == "dry run: would unlock 2 regions, 200 devices held back " \
            "now; nothing changed", out
        assert [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:4]] == \
            [["REGION", "STATE", "SCOPE", "DEVICES"], ["CU", "locked", "grey", "190"],
             ["US", "locked", "grey", "10"]], out
        assert [lk["state"] for lk in region_locks(topics.locks, "US")] == ["locked"]
        rc, out, err = run_ctl(["unlock-all", "--reason", "rollback", "--pin", "30m",
                                "--token-file", tokfile], None, url)
        assert rc == 0, (rc, err)
        assert out.startswith("unlocked 2 regions: ") and \
            sorted(out.splitlines()[0].split(": ")[1].split()) == ["CU", "US"], out
        for region in ("CU", "US"):
            last = region_locks(topics.locks, region)[-1]
            assert last["state"] == "unlocked" and last["actor"] == "root", last
        # A bad request body is the server's refusal: 1.
        rc, _, err = run_ctl(["lock", "cu", "--reason", "r"], "alice", url)
        assert rc == 1 and "invalid_region" in err, (rc, err)

        # watch follows GET /v1/stream: the snapshot is the first frame, and
        # a lock made meanwhile is in the next one at once (no polling: the
        # timed redraw is a minute away).
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
        env.update({"HOME": run_ctl.home, "FLEETGATE_TOKEN": TOKENS["vic"][1],
                    "FLEETGATE_URL": url})
        p = subprocess.Popen([ctl_exe(), "watch", "--interval", "60s"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        got = []
        frames = read_until(p, got, lambda o: o.count(CLEAR) >= 1 and
                            o.endswith("\n") and "US" in o.split(CLEAR)[-1])
        first = table_rows(frames.split(CLEAR)[1].split("\n", 2)[2])
        assert [r[:2] for r in first[1:]] == [["CU", "unlocked"], ["DE", "unlocked"],
                                              ["US", "unlocked"]], first
        t_lock = time.monotonic()
        rc, _, err = run_ctl(["lock", "DE", "--reason", "watch test", "--ttl", "5m"],
                             "alice", url)
        assert rc == 0, err

        def de_locked(o):
            frame = o.split(CLEAR)[-1]
            return o.endswith("\n") and re.search(r"^DE\s+locked\s", frame, re.M)
        frames = read_until(p, got, de_locked, timeout=5)
        assert time.monotonic() - t_lock < 5
        last = table_rows(frames.split(CLEAR)[-1].split("\n", 2)[2])
        de = [r for r in last if r[0] == "DE"][0]
        assert re.fullmatch(r"(5m00s|4m[0-5]\ds)", de[5]), de
        assert "live" in frames.split(CLEAR)[-1].splitlines()[0], frames
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=5)
        assert p.returncode == 0, (p.returncode, err)
        # --json: one line per event, the snapshot first; --count stops it.
        p = subprocess.Popen([ctl_exe(), "--json", "watch", "--count", "2"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        got = []
        snap = json.loads(read_until(p, got, lambda o: o.endswith("\n")))
        assert snap["event"] == "snapshot" and isinstance(snap["id"], int), snap
        assert [r["region"] for r in snap["data"]["regions"]] == ["CU", "DE", "US"], snap
        rc, _, err = run_ctl(["unlock", "DE", "--reason", "watch test"], "alice", url)
        assert rc == 0, err
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, (p.returncode, err)
        ev = json.loads(out.decode())
        assert ev["event"] == "lock" and ev["id"] > snap["id"], ev
        assert ev["data"]["region"] == "DE" and ev["data"]["state"] == "unlocked", ev

        # Two frames, each cleared and redrawn: the snapshot, then the
        # timed redraw.
        rc, out, err = run_ctl(["watch", "--count", "2", "--interval", "200ms"],
                               "vic", url)
        assert rc == 0, (rc, err)
        assert out.count(CLEAR) == 2, out
        frames = out.split(CLEAR)[1:]
        for frame in frames:
            assert "fleetgate regions" in frame, frame
            assert [r[0] for r in table_rows(frame.split("\n", 2)[2])[1:]] == \
                ["CU", "DE", "US"], frame
        # ... and stops on Ctrl-C.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
        env.update({"HOME": run_ctl.home, "FLEETGATE_TOKEN": TOKENS["vic"][1],
                    "FLEETGATE_URL": url})
        p = subprocess.Popen([ctl_exe(), "watch", "--interval", "300ms"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=5)
        assert p.returncode == 0, (p.returncode, err)
        assert out.decode().count(CLEAR) >= 2, out
        # A viewer token that goes bad stops watch with 3.
        rc, _, err = run_ctl(["watch", "--count", "3"], None, url)
        assert rc == 3, (rc, err)


def test_policy_reset():
    """policy CODE --reset --reason R: DELETE /v1/regions/CODE/policy as
    admin; the policies topic then ends with a tombstone for the region
    after the policy set before; the human answer says the scorers use
    their configured policy again; an operator gets 3 and writes nothing."""
    topics = Topics()
    policies = fgtest.unique_topic("ctl-policies", partitions=1,
                                   config={"cleanup.policy": "compact"})
    with Control(topics, {"control.policies_topic": policies}) as ctl:
        url = f"http://127.0.0.1:{ctl.port}"
        rc, out, err = run_ctl(["policy", "DE", "mode=never", "--reason", "DE by hand"],
                               "root", url)
        assert rc == 0, (rc, out, err)
        rc, _, err = run_ctl(["policy", "DE", "--reset", "--reason", "back"], "alice", url)
        assert rc == 3 and "403" in err and "needs role admin" in err, (rc, err)
        recs = fgtest.consume(policies)
        assert [(r.key, json.loads(r.value)["policy"]["mode"]) for r in recs] == \
            [(b"DE", "never")], recs

        rc, out, err = run_ctl(["policy", "DE", "--reset", "--reason",
                                "DE back to the config"], "root", url)
        assert rc == 0, (rc, out, err)
        lines = out.splitlines()
        assert lines[0] == "reset the policy of DE: scorers use their configured " \
            "policy again", out
        assert re.match(r"request req-[0-9a-f]{16}, audited yes$", lines[1]), out
        recs = fgtest.consume(policies)
        assert len(recs) == 2 and recs[1].key == b"DE" and recs[1].value is None, recs
        # --json: the server's answer; a second reset is one more tombstone.
        rc, out, err = run_ctl(["--json", "policy", "DE", "--reset", "--reason", "again"],
                               "root", url)
        assert rc == 0, (rc, err)
        body = json.loads(out)
        assert body["action"] == "policy_reset" and body["region"] == "DE", body
        assert body["policy"] is None and body["topic"] == policies, body
        assert [r.value for r in fgtest.consume(policies)][1:] == [None, None]
        # A bad region is the server's refusal: 1, nothing written.
        rc, _, err = run_ctl(["policy", "de", "--reset", "--reason", "r"], "root", url)
        assert rc == 1 and "invalid_region" in err, (rc, err)
        assert len(fgtest.consume(policies)) == 3


if __name__ == "__main__":
    fgtest.run()
