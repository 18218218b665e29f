# SPDX-License-Identifier: Apache-2.0
"""The control service (issue 4) as an operator and a device see it: a real
fleetgate-control with known tokens on per-test topics, against the test
broker. A lock made through the API lands on the lock topic (source ops, the
token's actor) and a gateway on the same topic answers `locked` to a grey
device in the region; a dry run changes nothing; unlock-all unlocks every
locked region with a pin; missing and weak tokens get 401/403; bad input gets
400/413/415 and writes nothing; fleet.audit holds every action and denial
with its actor and reason."""

import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

import fgtest
from fgtest import msgpack
from test_scorer_decisions import lock_records, ops_record, wait_lock

TOKENS = {
    # actor: (role, token)
    "vic": ("viewer", "viewer-" + secrets.token_hex(16)),
    "alice": ("operator", "operator-" + secrets.token_hex(16)),
    "root": ("admin", "admin-" + secrets.token_hex(16)),
    "rita": ("admin", "admin-" + secrets.token_hex(16)),
}
MAX_TTL_S = 3600


def now_ms():
    return int(time.time() * 1000)


def hash_token(token):
    """The hash fleetgate-control --hash-token prints for token."""
    p = subprocess.run([fgtest.build_path("fleetgate-control"), "--hash-token"],
                       input=(token + "\n").encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


class Topics:
    """Fresh lock (compacted), score and audit topics of one test."""

    def __init__(self):
        self.locks = fgtest.unique_topic("ctl-locks", partitions=1,
                                         config={"cleanup.policy": "compact"})
        self.scores = fgtest.unique_topic("ctl-scores", partitions=3)
        self.audit = fgtest.unique_topic("ctl-audit", partitions=1)


class Control:
    """A fleetgate-control process configured with --set: the test's topics,
    free ports, the TOKENS above (hashed), max_ttl 1 h."""

    def __init__(self, topics, settings=None):
        self.binary = fgtest.build_path("fleetgate-control")
        self.port = fgtest.free_port()
        self.admin_port = fgtest.free_port()
        config = {
            "control.id": "ctl-" + secrets.token_hex(3),
            "control.listen": f"127.0.0.1:{self.port}",
            "control.admin_listen": f"127.0.0.1:{self.admin_port}",
            "control.locks_topic": topics.locks,
            "control.scores_topic": topics.scores,
            "control.audit_topic": topics.audit,
            "control.max_ttl": f"{MAX_TTL_S}s",
            "control.default_ttl": "600s",
            "control.max_body": "4k",
            "kafka.bootstrap.servers": fgtest.kafka_bootstrap(),
        }
        # The test Redis, under keys of this process's own.
        rhost, rport = fgtest.redis_addr()
        config.update({"redis.host": rhost, "redis.port": str(rport),
                       "redis.prefix": "fgtest:ctl:" + secrets.token_hex(4)})
        for actor, (role, token) in TOKENS.items():
            config[f"tokens.{actor}"] = f"{role}:{hash_token(token)}"
        config.update(settings or {})
        self.config = config
        self.dir = tempfile.mkdtemp(prefix="fg-control-")
        self.log_path = os.path.join(self.dir, "control.log")
        self._logf = open(self.log_path, "ab")
        args = [self.binary]
        for k, v in config.items():
            args += ["--set", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"control exited with {self.proc.returncode}\n"
                                     + self.log_tail())
            try:
                if self.request("GET", "/readyz", admin=True, timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("control not ready in 30 s\n" + self.log_tail())
            time.sleep(0.05)

    def log_tail(self, lines=40):
        with open(self.log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        keep = [ln for ln in text.splitlines() if "librdkafka" not in ln]
        return "\n".join(keep[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("control ignored SIGTERM\n" + self.log_tail())
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                print("--- control log ---\n" + self.log_tail(60), flush=True)
            rc = self.stop()
            if exc_type is None:
                assert rc == 0, f"control exited with {rc} on SIGTERM\n" + self.log_tail()
        finally:
            self._logf.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def request(self, method, path, body=None, headers=None, admin=False,
                timeout=10.0):
        port = self.admin_port if admin else self.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def call(self, method, path, actor=None, obj=None, raw=None, token=None,
             content_type="application/json"):
        """One API call as actor (or with an explicit token); returns
        (status, headers, parsed JSON body)."""
        headers = {}
        if actor:
            token = TOKENS[actor][1]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = raw if raw is not None else (
            json.dumps(obj).encode() if obj is not None else None)
        if body is not None and content_type:
            headers["Content-Type"] = content_type
        status, hdrs, data = self.request(method, path, body, headers)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return status, hdrs, parsed


def score_row(region, devices, grey, mode="auto"):
    """A score row as consumers/sc_eval.c publishes it (msgpack)."""
    share = grey / devices if devices else 0.0
    return msgpack.packb({"region": region, "ts": now_ms(), "devices": devices,
                          "grey": grey, "share": share, "lo": max(0.0, share - 0.1),
                          "hi": min(1.0, share + 0.1), "mode": mode,
                          "state": "unlocked", "source": "auto"}, use_bin_type=True)


def publish_scores(topics, rows):
    fgtest.produce_many(topics.scores, [(r.encode(), score_row(r, d, g, *m))
                                        for r, d, g, *m in rows])


def audit_records(topic):
    return [json.loads(rec.value) for rec in fgtest.consume(topic)]


def wait_audit(topic, pred, what, timeout=10.0):
    return fgtest.wait_until(lambda: next((a for a in audit_records(topic) if pred(a)),
                                          None),
                             timeout=timeout, interval=0.2, what=what)


def checkin(gw, device, sku, region):
    status, _, body = gw.post_json("/v1/checkin", {"device_id": device,
                                                   "sku_region": sku,
                                                   "region": region, "seq": now_ms()})
    assert status == 200, (status, body)
    return json.loads(body)


# ---------------------------------------------------------------------------


def test_lock_reaches_topic_gateway_and_audit():
    """An operator locks CU (grey scope, 10 min): the answer comes after the
    broker stored the record; the record carries source ops, actor alice,
    the request id, since now and until since + ttl; a gateway on the same
    topic answers `locked` (with the message) to a grey device in CU and
    `ok` to a local one; the API shows CU locked; fleet.audit holds the
    action with actor, role, reason, before and after."""
    topics = Topics()
    with Control(topics) as ctl, fgtest.Gateway({"gateway.locks_topic": topics.locks}) as gw:
        publish_scores(topics, [("CU", 200, 190), ("US", 500, 10)])
        fgtest.wait_until(lambda: ctl.call("GET", "/v1/regions/CU", "vic")[0] == 200,
                          what="CU's score row in the table")
        t0 = now_ms()
        status, hdrs, body = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                      {"ttl_s": 600, "scope": "grey",
                                       "reason": "grey import wave",
                                       "message": "Use in CU is paused."})
        assert status == 200, (status, body)
        rid = body["request_id"]
        assert hdrs["x-request-id"] == rid
        assert body["audited"] is True and body["estimated_devices"] == 190, body
        rec = body["record"]
        assert rec["state"] == "locked" and rec["source"] == "ops", rec
        assert rec["actor"] == "alice" and rec["id"] == rid, rec
        # Answered after the broker acknowledged: the record is there now.
        records = lock_records(topics.locks)
        assert len(records) == 1, records
        lk = records[0][1]
        assert lk["region"] == "CU" and lk["state"] == "locked", lk
        assert lk["scope"] == "grey" and lk["source"] == "ops", lk
        assert lk["actor"] == "alice" and lk["id"] == rid, lk
        assert lk["reason"] == "grey import wave", lk
        assert lk["message"] == "Use in CU is paused.", lk
        assert t0 - 1000 <= lk["since"] <= now_ms() + 1000, lk
        assert lk["until"] == lk["since"] + 600 * 1000, lk
        assert lk["devices"] == 200, lk
        # A device sees it through the gateway.
        d = fgtest.wait_until(
            lambda: (lambda r: r if r["status"] == "locked" else None)(
                checkin(gw, "grey-1", "CN", "CU")),
            timeout=10, what="the gateway answering locked")
        assert d["region"] == "CU" and d["scope"] == "grey", d
        assert d["message"] == "Use in CU is paused." and d["until"] == lk["until"], d
        assert checkin(gw, "local-1", "CU", "CU")["status"] == "ok"
        assert checkin(gw, "grey-2", "CN", "US")["status"] == "ok"
        # The API's picture.
        status, _, r = ctl.call("GET", "/v1/regions/CU", "vic")
        assert status == 200 and r["state"] == "locked", r
        assert r["devices"] == 200 and r["grey"] == 190 and r["mode"] == "auto", r
        assert r["actor"] == "alice" and r["until"] == lk["until"], r
        status, _, lst = ctl.call("GET", "/v1/regions?state=locked", "vic")
        assert [x["region"] for x in lst["regions"]] == ["CU"], lst
        status, _, lst = ctl.call("GET", "/v1/regions?sort=devices", "alice")
        assert [x["region"] for x in lst["regions"]] == ["US", "CU"], lst
        status, _, lst = ctl.call("GET", "/v1/regions?sort=share", "root")
        assert [x["region"] for x in lst["regions"]] == ["CU", "US"], lst
        # The audit trail.
        au = wait_audit(topics.audit, lambda a: a["request_id"] == rid, "the lock's audit")
        assert au["actor"] == "alice" and au["role"] == "operator", au
        assert au["action"] == "lock" and au["target"] == "CU", au
        assert au["reason"] == "grey import wave" and au["outcome"] == "ok", au
        assert au["before"] is None and au["after"]["id"] == rid, au
        assert au["params"]["ttl_s"] == 600 and au["source"] == "127.0.0.1", au
        # An operator unlock with a pin: devices are ok again.
        status, _, body = ctl.call("POST", "/v1/regions/CU/unlock", "alice",
                                   {"reason": "checked: legitimate", "pin_s": 120})
        assert status == 200, body
        assert body["before"]["state"] == "locked", body
        rec = body["record"]
        assert rec["state"] == "unlocked" and rec["pin_until"] == rec["since"] + 120000, rec
        fgtest.wait_until(lambda: checkin(gw, "grey-1", "CN", "CU")["status"] == "ok",
                          timeout=10, what="the gateway answering ok after the unlock")
        au = wait_audit(topics.audit, lambda a: a["request_id"] == body["request_id"],
                        "the unlock's audit")
        assert au["before"]["id"] == rid and au["after"]["pin_until"] == rec["pin_until"], au


def test_dry_run_changes_nothing():
    """dry_run answers the devices a lock would reach (grey devices for grey,
    all devices for all) from the newest score, and writes no lock record;
    the audit says dry_run."""
    topics = Topics()
    with Control(topics) as ctl:
        publish_scores(topics, [("CU", 120, 100), ("CU", 200, 150)])
        fgtest.wait_until(
            lambda: (ctl.call("GET", "/v1/regions/CU", "vic")[2] or {}).get("devices") == 200,
            what="CU's newest score")
        status, _, body = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                   {"reason": "what if", "dry_run": True})
        assert status == 200, body
        assert body["dry_run"] is True and body["estimated_devices"] == 150, body
        assert body["would_write"]["state"] == "locked", body
        status, _, body2 = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                    {"reason": "what if", "scope": "all",
                                     "dry_run": True})
        assert status == 200 and body2["estimated_devices"] == 200, body2
        # Unknown region: no estimate, still nothing written.
        status, _, body3 = ctl.call("POST", "/v1/regions/KP/lock", "alice",
                                    {"reason": "what if", "dry_run": True})
        assert status == 200 and body3["estimated_devices"] is None, body3
        au = wait_audit(topics.audit, lambda a: a["request_id"] == body["request_id"],
                        "the dry run's audit")
        assert au["outcome"] == "dry_run" and au["dry_run"] is True, au
        assert au["estimated_devices"] == 150 and au["reason"] == "what if", au
        time.sleep(0.5)
        assert lock_records(topics.locks) == []
        status, _, r = ctl.call("GET", "/v1/regions/CU", "vic")
        assert r["state"] == "unlocked" and r["lock_id"] is None, r


def test_unlock_all_unlocks_every_locked_region_with_a_pin():
    """Three regions locked (two by the operator, one by the scorer), one
    shadow and one already unlocked: an admin's unlock-all writes an
    unlocked record with pin_until for exactly the three locked ones, in one
    audited action; a gateway then answers ok; an operator gets 403 and
    nothing is written."""
    topics = Topics()
    with Control(topics) as ctl, fgtest.Gateway({"gateway.locks_topic": topics.locks}) as gw:
        auto = ops_record("SY", state="locked", source="auto", actor="scorer",
                          until=now_ms() + 600000)
        shadow = ops_record("IR", state="shadow", source="auto", until=now_ms() + 600000)
        fgtest.produce_many(topics.locks, [
            (b"SY", msgpack.packb(auto, use_bin_type=True)),
            (b"IR", msgpack.packb(shadow, use_bin_type=True)),
            (b"DE", msgpack.packb(ops_record("DE"), use_bin_type=True))])
        for region in ("CU", "UA-43"):
            status, _, body = ctl.call("POST", f"/v1/regions/{region}/lock", "alice",
                                       {"reason": "wave", "scope": "all", "ttl_s": 900})
            assert status == 200, body
        fgtest.wait_until(
            lambda: len(ctl.call("GET", "/v1/regions?state=locked", "vic")[2]["regions"]) == 3,
            what="three locked regions in the table")
        assert checkin(gw, "d-1", "CU", "CU")["status"] == "locked"
        before = len(lock_records(topics.locks))
        # An operator may not.
        status, _, body = ctl.call("POST", "/v1/locks/unlock-all", "alice",
                                   {"reason": "all clear", "pin_s": 600})
        assert status == 403 and body["error"] == "forbidden", body
        assert len(lock_records(topics.locks)) == before
        # An admin may.
        t0 = now_ms()
        status, _, body = ctl.call("POST", "/v1/locks/unlock-all", "root",
                                   {"reason": "all clear", "pin_s": 600})
        assert status == 200, body
        assert sorted(body["unlocked"]) == ["CU", "SY", "UA-43"], body
        assert body["failed"] == [], body
        new = [lk for _, lk in lock_records(topics.locks)[before:]]
        assert sorted(lk["region"] for lk in new) == ["CU", "SY", "UA-43"], new
        for lk in new:
            assert lk["state"] == "unlocked" and lk["source"] == "ops", lk
            assert lk["actor"] == "root" and lk["reason"] == "all clear", lk
            assert lk["id"] == f"{body['request_id']}-{lk['region']}", lk
            assert t0 - 1000 <= lk["since"] <= now_ms() + 1000, lk
            assert lk["pin_until"] == lk["since"] + 600000, lk
        assert [lk["scope"] for lk in new if lk["region"] == "SY"] == ["grey"]
        fgtest.wait_until(lambda: checkin(gw, "d-1", "CU", "CU")["status"] == "ok",
                          timeout=10, what="CU devices ok after unlock-all")
        assert checkin(gw, "d-2", "UA", "UA-43")["status"] == "ok"
        status, _, lst = ctl.call("GET", "/v1/regions?state=locked", "vic")
        assert lst["regions"] == [], lst
        status, _, ir = ctl.call("GET", "/v1/regions/IR", "vic")
        assert ir["state"] == "shadow", ir
        au = wait_audit(topics.audit, lambda a: a["request_id"] == body["request_id"],
                        "the unlock-all audit")
        assert au["action"] == "unlock_all" and au["target"] == "*", au
        assert au["actor"] == "root" and au["role"] == "admin", au
        assert au["reason"] == "all clear" and au["outcome"] == "ok", au
        assert sorted(au["regions"]) == ["CU", "SY", "UA-43"], au
        assert au["before"]["SY"]["actor"] == "scorer", au
        assert au["after"]["CU"]["pin_until"] > now_ms(), au
        assert au["params"]["pin_s"] == 600, au
        # With nothing locked, unlock-all is a no-op that is still audited.
        status, _, body = ctl.call("POST", "/v1/locks/unlock-all", "root",
                                   {"reason": "again"})
        assert status == 200 and body["unlocked"] == [], body
        wait_audit(topics.audit, lambda a: a["request_id"] == body["request_id"],
                   "the empty unlock-all audit")


def test_denials_are_refused_and_audited():
    """No token and a bad token get 401 (WWW-Authenticate), a viewer locking
    and an operator unlocking all get 403; nothing reaches the lock topic;
    every denial is on fleet.audit with its actor and role."""
    topics = Topics()
    with Control(topics) as ctl:
        cases = [
            ("GET", "/v1/regions", None, None, 401),
            ("POST", "/v1/regions/CU/lock", None, None, 401),
            ("POST", "/v1/regions/CU/lock", None, "not-a-known-token-at-all", 401),
            ("POST", "/v1/regions/CU/lock", None, TOKENS["alice"][1] + "x", 401),
            ("POST", "/v1/regions/CU/lock", "vic", None, 403),
            ("POST", "/v1/regions/CU/unlock", "vic", None, 403),
            ("POST", "/v1/locks/unlock-all", "alice", None, 403),
        ]
        ids = []
        for method, path, actor, token, want in cases:
            status, hdrs, body = ctl.call(method, path, actor,
                                          {"reason": "try", "ttl_s": 60} if method == "POST" else None,
                                          token=token)
            assert status == want, (path, actor, status, body)
            assert body["error"] == ("unauthorized" if want == 401 else "forbidden"), body
            if want == 401:
                assert hdrs.get("www-authenticate", "").startswith("Bearer"), hdrs
            ids.append((body["request_id"], actor, want))
        # A wrong scheme is a 401 too.
        status, _, _ = ctl.request("GET", "/v1/regions", None,
                                   {"Authorization": "Basic dmljOng="})
        assert status == 401
        time.sleep(0.3)
        assert lock_records(topics.locks) == []
        want_ids = {rid for rid, _, _ in ids}
        fgtest.wait_until(lambda: want_ids <= {a["request_id"] for a in audit_records(topics.audit)},
                          what="every denial audited")
        by_id = {a["request_id"]: a for a in audit_records(topics.audit)}
        for rid, actor, want in ids:
            au = by_id[rid]
            assert au["outcome"] == "denied" and au["status"] == want, au
            assert au["actor"] == actor, au
            assert au["role"] == (TOKENS[actor][0] if actor else "none"), au
            assert au["after"] is None, au
        assert by_id[ids[6][0]]["action"] == "unlock_all", by_id[ids[6][0]]
        assert by_id[ids[4][0]]["target"] == "CU", by_id[ids[4][0]]
        _, _, text = ctl.request("GET", "/metrics", admin=True)
        m = fgtest.parse_metrics(text.decode())
        assert fgtest.metric(m, "fleetgate_control_denied_total", status="401") == 5
        assert fgtest.metric(m, "fleetgate_control_denied_total", status="403") == 3


def test_bad_input_gets_400_and_writes_nothing():
    """Bad JSON, an unknown field, an invalid region code, a TTL beyond
    max_ttl, a missing or blank reason, a wrong type: 400 with the error
    code and the field; an oversized body 413; a non-JSON content type 415;
    unknown paths 404, wrong methods 405; nothing on the lock topic."""
    topics = Topics()
    with Control(topics) as ctl:
        cases = [
            ("/v1/regions/CU/lock", b"{not json", "invalid_json", None),
            ("/v1/regions/CU/lock", b"[]", "not_an_object", None),
            ("/v1/regions/CU/lock", b'{"reason":"r","ttl":60}', "unknown_field", "ttl"),
            ("/v1/regions/cu/lock", b'{"reason":"r"}', "invalid_region", "region"),
            ("/v1/regions/CUBA/lock", b'{"reason":"r"}', "invalid_region", "region"),
            ("/v1/regions/UA-4444/unlock", b'{"reason":"r"}', "invalid_region", "region"),
            ("/v1/regions/UK/lock", b'{"reason":"r"}', "unknown_region", "region"),
            ("/v1/regions/QZ-1/unlock", b'{"reason":"r"}', "unknown_region", "region"),
            ("/v1/regions/CU/lock", json.dumps({"reason": "r", "ttl_s": MAX_TTL_S + 1}).encode(),
             "out_of_range", "ttl_s"),
            ("/v1/regions/CU/lock", b'{"ttl_s":60}', "missing_field", "reason"),
            ("/v1/regions/CU/lock", b'{"reason":"  "}', "invalid_value", "reason"),
            ("/v1/regions/CU/lock", b'{"reason":"r","scope":"most"}', "invalid_value", "scope"),
            ("/v1/regions/CU/lock", b'{"reason":"r","ttl_s":"60"}', "wrong_type", "ttl_s"),
            ("/v1/regions/CU/unlock", b'{}', "missing_field", "reason"),
            ("/v1/regions/CU/unlock", b'{"reason":"r","pin_s":-1}', "out_of_range", "pin_s"),
            ("/v1/locks/unlock-all", b'{"pin_s":60}', "missing_field", "reason"),
        ]
        for path, raw, code, field in cases:
            actor = "root" if "unlock-all" in path else "alice"
            status, _, body = ctl.call("POST", path, actor, raw=raw)
            assert status == 400, (path, raw, status, body)
            assert body["error"] == code, (path, raw, body)
            assert body.get("field") == field, (path, raw, body)
            assert body.get("detail"), body
        # Over control.max_body (4k).
        big = json.dumps({"reason": "r", "message": "x" * 5000}).encode()
        status, _, _ = ctl.call("POST", "/v1/regions/CU/lock", "alice", raw=big)
        assert status == 413, status
        status, _, body = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                   raw=b'{"reason":"r"}', content_type="text/plain")
        assert status == 415 and body["error"] == "unsupported_media_type", body
        status, _, body = ctl.call("GET", "/v1/nothing", "vic")
        assert status == 404 and body["error"] == "not_found", body
        status, hdrs, body = ctl.call("GET", "/v1/regions/CU/lock", "alice")
        assert status == 405 and hdrs["allow"] == "POST", (status, hdrs)
        status, _, body = ctl.call("GET", "/v1/regions?sort=name", "vic")
        assert status == 400 and body["error"] == "invalid_query", body
        status, _, body = ctl.call("GET", "/v1/regions/XX", "vic")
        assert status == 404 and body["error"] == "unknown_region", body
        time.sleep(0.3)
        assert lock_records(topics.locks) == []
        # The refusals of authenticated actions are audited as invalid.
        fgtest.wait_until(
            lambda: sum(1 for a in audit_records(topics.audit) if a["outcome"] == "invalid")
            >= len(cases) + 1, what="the invalid requests audited")
        au = next(a for a in audit_records(topics.audit) if a["error"] == "out_of_range"
                  and a["target"] == "CU")
        assert au["actor"] == "alice" and au["status"] == 400, au
        # Still serving: a good lock works after all of that.
        status, _, body = ctl.call("POST", "/v1/regions/CU/lock", "alice", {"reason": "ok now"})
        assert status == 200 and body["record"]["until"] - body["record"]["since"] == 600000, body


def test_issue4_mass_lock_needs_a_second_admin():
    """Two-person rule: a lock whose estimate is over
    control.two_person_devices answers 202 pending and writes nothing; the
    requester cannot approve it (403), an unknown id is 404, another admin's
    approval writes the lock (actor = requester, id = the pending id); a
    second approval is 409; an expired request is 410; a small lock and
    unlock-all are not held; all of it is on fleet.audit."""
    topics = Topics()
    with Control(topics, {"control.two_person_devices": "1000",
                          "control.request_ttl": "8s"}) as ctl:
        publish_scores(topics, [("CU", 5000, 4000), ("US", 500, 10)])
        fgtest.wait_until(lambda: ctl.call("GET", "/v1/regions/US", "vic")[0] == 200
                          and ctl.call("GET", "/v1/regions/CU", "vic")[0] == 200,
                          what="score rows in the table")
        # A dry run says it would need approval and writes nothing.
        status, _, body = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                   {"reason": "wave", "dry_run": True})
        assert status == 200 and body["needs_approval"] is True, (status, body)
        status, _, body = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                   {"reason": "grey wave", "ttl_s": 600})
        assert status == 202, (status, body)
        assert body["status"] == "pending" and body["estimated_devices"] == 4000, body
        assert body["expires_at"] > now_ms(), body
        rid = body["request_id"]
        time.sleep(0.3)
        assert lock_records(topics.locks) == []
        # An operator cannot approve; the requester (admin) neither.
        status, _, body = ctl.call("POST", f"/v1/requests/{rid}/approve", "alice")
        assert status == 403 and body["error"] == "forbidden", body
        status, _, body = ctl.call("POST", "/v1/regions/CU/lock", "root",
                                   {"reason": "own wave", "ttl_s": 600})
        assert status == 202, body
        own, own_expires = body["request_id"], body["expires_at"]
        status, _, body = ctl.call("POST", f"/v1/requests/{own}/approve", "root")
        assert status == 403 and body["error"] == "same_actor", body
        status, _, body = ctl.call("POST", "/v1/requests/req-00000000deadbeef/approve",
                                   "root")
        assert status == 404 and body["error"] == "unknown_request", body
        assert lock_records(topics.locks) == []
        # Another admin approves: the lock is written now.
        status, _, body = ctl.call("POST", f"/v1/requests/{rid}/approve", "rita")
        assert status == 200, (status, body)
        assert body["approves"] == rid and body["requested_by"] == "alice", body
        rec = body["record"]
        assert rec["state"] == "locked" and rec["actor"] == "alice", rec
        assert rec["id"] == rid, rec
        records = lock_records(topics.locks)
        assert len(records) == 1 and records[0][1]["region"] == "CU", records
        status, _, body = ctl.call("POST", f"/v1/requests/{rid}/approve", "root")
        assert status == 409, body
        # A small lock goes through at once.
        status, _, body = ctl.call("POST", "/v1/regions/US/lock", "alice",
                                   {"reason": "small", "ttl_s": 60})
        assert status == 200, body
        # The pending request of root expires.
        time.sleep(max(0.0, (own_expires - now_ms()) / 1000 + 0.2))
        status, _, body = ctl.call("POST", f"/v1/requests/{own}/approve", "rita")
        assert status == 410 and body["error"] == "expired", body
        # unlock-all is never held.
        status, _, body = ctl.call("POST", "/v1/locks/unlock-all", "root",
                                   {"reason": "all clear"})
        assert status == 200 and sorted(body["unlocked"]) == ["CU", "US"], body
        approve_id = None
        au = wait_audit(topics.audit, lambda a: a["action"] == "approve"
                        and a["outcome"] == "ok", "the approval audited")
        assert au["actor"] == "rita" and au["approves"] == rid, au
        assert au["requested_by"] == "alice" and au["reason"] == "grey wave", au
        approve_id = au["request_id"]
        by_outcome = {}
        for a in audit_records(topics.audit):
            by_outcome.setdefault(a["outcome"], []).append(a)
        assert any(a["request_id"] == rid and a["status"] == 202
                   for a in by_outcome["pending"]), by_outcome
        assert any(a["error"] == "same_actor" for a in by_outcome["denied"]), by_outcome
        assert any(a["status"] == 410 for a in by_outcome["expired"]), by_outcome
        assert approve_id


def test_issue4_policy_is_validated_and_published():
    """PUT /v1/regions/DE/policy (admin): 200 with the normalized policy,
    which lands on the policies topic keyed by region; bad values get 400
    naming the key and publish nothing; an operator gets 403; audited."""
    topics = Topics()
    policies = fgtest.unique_topic("ctl-policies", partitions=1,
                                   config={"cleanup.policy": "compact"})
    with Control(topics, {"control.policies_topic": policies}) as ctl:
        for body, field in [({"reason": "x", "mode": "sometimes"}, "mode"),
                            ({"reason": "x", "lock_at": 0.5, "unlock_at": 0.7}, "unlock_at"),
                            ({"reason": "x", "ttl": "2h"}, "ttl"),
                            ({"reason": "x", "for": "soon"}, "for"),
                            ({"mode": "never"}, "reason")]:
            status, _, resp = ctl.call("PUT", "/v1/regions/DE/policy", "root", body)
            assert status == 400 and resp["field"] == field, (body, status, resp)
        status, _, resp = ctl.call("PUT", "/v1/regions/DE/policy", "alice",
                                   {"reason": "x", "mode": "never"})
        assert status == 403, resp
        status, hdrs, resp = ctl.call("POST", "/v1/regions/DE/policy", "root",
                                      {"reason": "x"})
        assert status == 405 and hdrs["allow"] == "PUT, DELETE", resp
        assert fgtest.consume(policies, timeout=5.0) == []
        status, _, resp = ctl.call("PUT", "/v1/regions/DE/policy", "root",
                                   {"reason": "DE stays open", "mode": "never",
                                    "for": "2m", "lock_at": "0.7"})
        assert status == 200, (status, resp)
        pol = resp["policy"]
        assert pol["mode"] == "never" and pol["for"] == 120000, pol
        assert abs(pol["lock_at"] - 0.7) < 1e-9 and pol["scope"] == "grey", pol
        assert pol["ttl"] == MAX_TTL_S * 1000, pol  # default cut to max_ttl
        assert resp["audited"] is True, resp
        recs = fgtest.consume(policies, timeout=5.0)
        assert len(recs) == 1 and recs[0].key == b"DE", recs
        val = json.loads(recs[0].value)
        assert val["policy"] == pol and val["actor"] == "root", val
        au = wait_audit(topics.audit, lambda a: a["action"] == "policy"
                        and a["outcome"] == "ok", "the policy audited")
        assert au["policy"] == pol and au["reason"] == "DE stays open", au


def test_help_check_config_and_hash_token():
    """--help lists the keys, --check-config refuses a bad token line naming
    it, --hash-token matches sha256 and refuses short tokens."""
    exe = fgtest.build_path("fleetgate-control")
    p = subprocess.run([exe, "--help"], stdout=subprocess.PIPE, timeout=10)
    assert p.returncode == 0 and b"control.max_ttl" in p.stdout
    assert b"FLEETGATE_CONTROL_LISTEN" in p.stdout
    p = subprocess.run([exe, "--set", "tokens.bob=root:" + "0" * 64, "--check-config"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 2 and b"tokens.bob" in p.stderr, p.stderr
    p = subprocess.run([exe, "--set", "tokens.bob=admin:" + "0" * 63, "--check-config"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 2 and b"64 hex digits" in p.stderr, p.stderr
    tok = "x" * 20
    assert hash_token(tok) == hashlib.sha256(tok.encode()).hexdigest()
    p = subprocess.run([exe, "--hash-token"], input=b"short\n", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 2 and p.stdout == b"", p


def test_unlock_dry_runs_list_what_they_would_lift():
    """dry_run on unlock and unlock-all: 200 with the answer a real one
    gives plus the regions it would unlock, each with its state now and the
    devices its lock holds back (grey for a grey lock, all for an all lock,
    null without a score, 0 when no lock is in force), and their sum;
    nothing reaches the lock topic, the regions stay locked, the audit
    says dry_run with the estimate; unlock-all's dry run still needs admin;
    a dry_run that is not a boolean is 400 wrong_type."""
    topics = Topics()
    with Control(topics) as ctl:
        publish_scores(topics, [("CU", 200, 190), ("UA-43", 640, 20), ("DE", 100, 60),
                                ("BR", 300, 200)])
        # SY: locked by the scorer, no score row; BR: a lock past its until.
        sy = ops_record("SY", state="locked", source="auto", actor="scorer",
                        until=now_ms() + 600000)
        br = ops_record("BR", state="locked", since=now_ms() - 120000,
                        until=now_ms() - 60000)
        fgtest.produce_many(topics.locks, [(b"SY", msgpack.packb(sy, use_bin_type=True)),
                                           (b"BR", msgpack.packb(br, use_bin_type=True))])
        fgtest.wait_until(lambda: ctl.call("GET", "/v1/regions", "vic")[2]["count"] == 5,
                          what="five regions in the table")
        for region, scope in (("CU", "grey"), ("UA-43", "all")):
            status, _, body = ctl.call("POST", f"/v1/regions/{region}/lock", "alice",
                                       {"reason": "wave", "scope": scope, "ttl_s": 900})
            assert status == 200, body
        fgtest.wait_until(
            lambda: len(ctl.call("GET", "/v1/regions?state=locked", "vic")[2]["regions"]) == 3,
            what="three locked regions in the table")
        before = len(lock_records(topics.locks))

        # One region: what a real unlock answers, would_write for record.
        status, _, one = ctl.call("POST", "/v1/regions/CU/unlock", "alice",
                                  {"reason": "what if", "pin_s": 600, "dry_run": True})
        assert status == 200, (status, one)
        assert one["dry_run"] is True and one["action"] == "unlock", one
        assert one["region"] == "CU" and one["before"]["state"] == "locked", one
        assert "record" not in one and one["audited"] is True, one
        w = one["would_write"]
        assert w["state"] == "unlocked" and w["actor"] == "alice", w
        assert w["pin_until"] == w["since"] + 600000 and w["scope"] == "grey", w
        assert one["regions"] == [{"region": "CU", "state": "locked", "scope": "grey",
                                   "estimated_devices": 190}], one
        assert one["estimated_devices"] == 190, one
        # No lock in force: nothing held back.
        for region, state, scope in (("DE", "unlocked", None), ("BR", "expired", "grey")):
            status, _, b = ctl.call("POST", f"/v1/regions/{region}/unlock", "alice",
                                    {"reason": "what if", "dry_run": True})
            assert status == 200, (region, status, b)
            assert b["regions"] == [{"region": region, "state": state, "scope": scope,
                                     "estimated_devices": 0}], b
            assert b["estimated_devices"] == 0, b

        # unlock-all: admin only, as the real one.
        status, _, b = ctl.call("POST", "/v1/locks/unlock-all", "alice",
                                {"reason": "what if", "dry_run": True})
        assert status == 403 and b["error"] == "forbidden", (status, b)
        status, _, all_ = ctl.call("POST", "/v1/locks/unlock-all", "root",
                                   {"reason": "what if all", "pin_s": 60, "dry_run": True})
        assert status == 200, (status, all_)
        assert all_["dry_run"] is True and all_["action"] == "unlock_all", all_
        assert all_["unlocked"] == [] and all_["failed"] == [] and all_["records"] == [], all_
        by_region = {r["region"]: r for r in all_["regions"]}
        assert sorted(by_region) == ["CU", "SY", "UA-43"], all_
        assert by_region["CU"] == {"region": "CU", "state": "locked", "scope": "grey",
                                   "estimated_devices": 190}, all_
        assert by_region["UA-43"]["scope"] == "all", all_
        assert by_region["UA-43"]["estimated_devices"] == 640, all_
        assert by_region["SY"]["estimated_devices"] is None, all_  # no score row
        assert all_["estimated_devices"] == 830, all_
        assert sorted(r["region"] for r in all_["would_write"]) == ["CU", "SY", "UA-43"], all_
        assert all(r["state"] == "unlocked" and r["pin_until"] == r["since"] + 60000
                   for r in all_["would_write"]), all_

        # Nothing written, nothing unlocked.
        time.sleep(0.5)
        assert len(lock_records(topics.locks)) == before
        status, _, lst = ctl.call("GET", "/v1/regions?state=locked", "vic")
        assert sorted(r["region"] for r in lst["regions"]) == ["CU", "SY", "UA-43"], lst

        # Audited as dry runs, with the estimate.
        au = wait_audit(topics.audit, lambda a: a["request_id"] == one["request_id"],
                        "the unlock dry run's audit")
        assert au["outcome"] == "dry_run" and au["dry_run"] is True, au
        assert au["action"] == "unlock" and au["status"] == 200, au
        assert au["estimated_devices"] == 190 and au["reason"] == "what if", au
        assert au["before"]["state"] == "locked" and au["after"]["state"] == "unlocked", au
        au = wait_audit(topics.audit, lambda a: a["request_id"] == all_["request_id"],
                        "the unlock-all dry run's audit")
        assert au["outcome"] == "dry_run" and au["dry_run"] is True, au
        assert au["action"] == "unlock_all" and au["target"] == "*", au
        assert au["estimated_devices"] == 830 and au["actor"] == "root", au
        assert sorted(au["regions"]) == ["CU", "SY", "UA-43"], au

        # dry_run must be a boolean.
        for path, actor in (("/v1/regions/CU/unlock", "alice"),
                            ("/v1/locks/unlock-all", "root")):
            for bad in ("yes", 1):
                status, _, b = ctl.call("POST", path, actor,
                                        {"reason": "what if", "dry_run": bad})
                assert status == 400, (path, bad, status, b)
                assert b["error"] == "wrong_type" and b["field"] == "dry_run", b
        time.sleep(0.3)
        assert len(lock_records(topics.locks)) == before

        # dry_run false is the real thing.
        status, _, b = ctl.call("POST", "/v1/regions/CU/unlock", "alice",
                                {"reason": "done", "dry_run": False})
        assert status == 200 and b["dry_run"] is False, b
        assert b["record"]["state"] == "unlocked" and "regions" not in b, b
        assert len(lock_records(topics.locks)) == before + 1


def test_approve_refuses_malformed_request_ids():
    """The {id} of POST /v1/requests/{id}/approve is raw request bytes: an
    id that is not "req-" and 16 hex digits (text that reads like a region
    or "*", a right-to-left override, bytes that are not UTF-8, a
    percent-escape, upper case, too long) gets 400 invalid_request_id and
    the answer does not echo it; no audit record (the 400, an operator's
    403, a missing token's 401) and no log line carries it; nothing is
    written. A well-formed unknown id is still 404, audited by its id."""
    import socket

    def raw_post(port, path, token=None):
        """POST path (bytes, sent as is) with an empty JSON body; returns
        (status, parsed body)."""
        head = (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n")
        if token:
            head += b"Authorization: Bearer " + token.encode() + b"\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head + b"\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        return int(status_line.split()[1]), json.loads(body)

    topics = Topics()
    bad_ids = [b"CU", b"*", "\u202eCU*".encode(), b"\xff\xfe\xc3",
               b"req-%E2%80%AE", b"req-0123456789ABCDEF",
               b"req-0123456789abcdef0123456789", b"req-0123456789abcde"]
    with Control(topics) as ctl:
        refused = []
        for bad in bad_ids:
            path = b"/v1/requests/" + bad + b"/approve"
            status, body = raw_post(ctl.port, path, TOKENS["root"][1])
            assert status == 400, (bad, status, body)
            assert body["error"] == "invalid_request_id" and body["field"] == "id", body
            text = json.dumps(body, ensure_ascii=False).encode()
            assert bad not in text and "CU*" not in body["detail"], (bad, body)
            refused.append(body["request_id"])
        # Denials before the id is looked at: audited without it.
        status, body = raw_post(ctl.port, "/v1/requests/\u202eCU*/approve".encode(),
                                TOKENS["alice"][1])
        assert status == 403 and body["error"] == "forbidden", body
        denied = [body["request_id"]]
        status, body = raw_post(ctl.port, b"/v1/requests/*/approve")
        assert status == 401 and body["error"] == "unauthorized", body
        denied.append(body["request_id"])
        # A well-formed id that names nothing is looked up as before.
        status, _, body = ctl.call("POST", "/v1/requests/req-00000000deadbeef/approve",
                                   "root")
        assert status == 404 and body["error"] == "unknown_request", body
        unknown = body["request_id"]

        want = set(refused + denied + [unknown])
        fgtest.wait_until(lambda: want <= {a["request_id"]
                                           for a in audit_records(topics.audit)},
                          what="every refusal audited")
        by_id = {a["request_id"]: a for a in audit_records(topics.audit)}
        for rid in refused:
            au = by_id[rid]
            assert au["action"] == "approve" and au["outcome"] == "invalid", au
            assert au["status"] == 400 and au["error"] == "invalid_request_id", au
            assert au["target"] is None and au["actor"] == "root", au
        for rid, status in zip(denied, (403, 401)):
            au = by_id[rid]
            assert au["status"] == status and au["target"] is None, au
        assert by_id[unknown]["target"] == "req-00000000deadbeef", by_id[unknown]
        raw_audit = b"".join(rec.value for rec in fgtest.consume(topics.audit))
        with open(ctl.log_path, "rb") as f:
            log = f.read()
        # The distinctive ones ("CU" and "*" are in any log), as far as a
        # segment is kept (24 bytes).
        for bad in bad_ids[2:]:
            assert bad[:24] not in raw_audit, (bad, raw_audit)
            assert bad[:24] not in log, (bad, ctl.log_tail())
        assert lock_records(topics.locks) == []


if __name__ == "__main__":
    fgtest.run()
