# SPDX-License-Identifier: Apache-2.0
"""The scorer follows operator policies (fleet.region-policies): an admin
sets SY to `never` through the control service (PUT /v1/regions/SY/policy);
devices check in through a real gateway with CU and SY both 95% grey; CU
locks and SY never does, although its score stays above lock_at (its score
rows say mode never). A scorer restarted with `for` = 0, which would lock SY
at its first tick, reads the policy before deciding. A record that does not
check (even one whose mode is valid) is counted and changes nothing. An
operator may not reset SY's policy (403, nothing written); the admin's
DELETE /v1/regions/SY/policy writes a tombstone to the policies topic (there
when the API answers, and audited as policy_reset), which gives SY its
configured policy back: its score rows say auto again, and SY locks. A
scorer that cannot read the policies topic at all decides nothing."""

import json
import subprocess
import time
import types

import fgtest
from fgtest import RedisServer
from test_control import Control, wait_audit
from test_scorer_decisions import (Fleet, Scorer, Topics, gateway, lock_records,
                                   score_rows, wait_lock)

LOCK_AT = 0.6


def policy_topics():
    """The scorer's per-test topics (policies included) plus an audit topic."""
    t = Topics()
    t.audit = fgtest.unique_topic("pol-audit", partitions=1)
    return t


def region_locks(topic, region):
    return [lk for _, lk in lock_records(topic) if lk.get("region") == region]


def rows_of(topic, region, since_ms=0):
    return [r for r in score_rows(topic) if r["region"] == region and r["ts"] >= since_ms]


def wait_rows_above(topic, region, since_ms, count, what):
    """Waits until `count` score rows of region since since_ms have a lower
    bound at or over LOCK_AT (the scorer ticked that often with the lock
    condition holding); returns them."""
    def enough():
        rows = [r for r in rows_of(topic, region, since_ms) if r["lo"] >= LOCK_AT]
        return rows if len(rows) >= count else None
    return fgtest.wait_until(enough, timeout=30, interval=0.3, what=what)


def test_operator_never_restart_invalid_record_and_tombstone():
    topics = policy_topics()
    settings = {"scorer.policies_topic": topics.policies, "policy.lock_at": LOCK_AT}
    ctl_topics = types.SimpleNamespace(locks=topics.locks, scores=topics.scores,
                                       audit=topics.audit)
    with RedisServer() as r, gateway(topics) as gw, \
            Control(ctl_topics, {"control.policies_topic": topics.policies}) as ctl, \
            Scorer(topics, r, settings) as sc:
        # The admin's policy, through the API; the scorer applies it live.
        status, _, body = ctl.call("PUT", "/v1/regions/SY/policy", "root",
                                   {"reason": "SY is handled by hand", "mode": "never"})
        assert status == 200 and body["policy"]["mode"] == "never", (status, body)
        fgtest.wait_until(lambda: sc.metric("fleetgate_policy_records_total") == 1,
                          timeout=15, what="the scorer applying SY's policy")
        assert sc.metric("fleetgate_policy_table_ready") == 1
        assert "policy_applied region=SY mode=never" in sc.log(), sc.log_tail()
        assert "actor=root" in sc.log() and body["request_id"] in sc.log()

        fleet = Fleet(gw, interval=0.5)
        fleet.add("CU", 20, 19)
        sy_grey, _ = fleet.add("SY", 20, 19)
        with fleet:
            t0 = int(time.time() * 1000)
            wait_lock(topics.locks, lambda lk: lk["region"] == "CU", "CU locked")
            # SY held its lock condition for well over `for` (1 s) and four
            # ticks: mode never is what kept it open.
            rows = wait_rows_above(topics.scores, "SY", t0, 6, "SY scored above lock_at")
            assert rows[-1]["ts"] - rows[0]["ts"] >= 2000, rows
            assert all(row["mode"] == "never" for row in rows), rows
            assert all(row["mode"] == "auto" for row in rows_of(topics.scores, "CU", t0))
            assert region_locks(topics.locks, "SY") == []
            assert fleet.status(sy_grey) == {"ok": 19}, fleet.status(sy_grey)

            # Restart with for = 0: a scorer that decided before reading the
            # policies topic would lock SY at its first tick.
            group = sc.config["scorer.group"]
            assert sc.stop() == 0
            t_restart = int(time.time() * 1000)
            with Scorer(topics, r, dict(settings, **{"policy.for": "0ms"}),
                        group=group) as sc2:
                assert sc2.metric("fleetgate_policy_table_ready") == 1
                assert sc2.metric("fleetgate_policy_records_total") == 1
                fgtest.wait_until(lambda: sc2.metric("fleetgate_scorer_ticks_total") >= 6,
                                  timeout=30, what="six ticks of the restarted scorer")
                rows = wait_rows_above(topics.scores, "SY", t_restart, 4,
                                       "SY scored by the restarted scorer")
                assert all(row["mode"] == "never" for row in rows), rows
                assert region_locks(topics.locks, "SY") == []

                # Invalid records: a valid mode beside a bad key (nothing of
                # it may apply), and a key that is no region code.
                bad = {"region": "SY", "actor": "itest", "reason": "broken",
                       "policy": {"mode": "auto", "lock_at": "high"}}
                fgtest.produce_many(topics.policies, [
                    (b"SY", json.dumps(bad).encode()),
                    (b"not a region", json.dumps(bad).encode()),
                    (b"SY", b'{"region":"SY","policy":{"mode":"auto"')])
                fgtest.wait_until(
                    lambda: sc2.metric("fleetgate_policy_records_invalid_total") == 3,
                    timeout=15, what="three invalid policy records counted")
                ticks = sc2.metric("fleetgate_scorer_ticks_total")
                fgtest.wait_until(
                    lambda: sc2.metric("fleetgate_scorer_ticks_total") >= ticks + 4,
                    timeout=20, what="four more ticks")
                assert region_locks(topics.locks, "SY") == []
                assert sc2.running()
                assert "policy.lock_at" in sc2.log(), sc2.log_tail()

                # An operator may not hand SY back to the configuration.
                n_policies = len(fgtest.consume(topics.policies))
                status, _, body = ctl.call("DELETE", "/v1/regions/SY/policy", "alice",
                                           {"reason": "not mine to decide"})
                assert status == 403 and body["error"] == "forbidden", (status, body)
                denied_id = body["request_id"]

                # The admin's reset: a tombstone for SY, on the topic when the
                # API answers. SY is back to the configured policy (auto) and
                # locks, with the configured message.
                t_tomb = int(time.time() * 1000)
                status, _, body = ctl.call("DELETE", "/v1/regions/SY/policy", "root",
                                           {"reason": "SY back to the config"})
                assert status == 200, (status, body)
                assert body["action"] == "policy_reset" and body["region"] == "SY", body
                assert body["policy"] is None and body["audited"] is True, body
                assert body["topic"] == topics.policies, body
                recs = fgtest.consume(topics.policies)
                assert len(recs) == n_policies + 1, recs  # the 403 wrote nothing
                assert recs[-1].key == b"SY" and recs[-1].value is None, recs[-1]
                _, lk = wait_lock(topics.locks, lambda lk: lk["region"] == "SY",
                                  "SY locked after the tombstone", timeout=20)
                assert lk["state"] == "locked" and lk["source"] == "auto", lk
                assert lk["since"] >= t_tomb - 1000, lk
                assert lk["message"].startswith("Use in SY is paused until "), lk
                assert sc2.metric("fleetgate_policy_tombstones_total") == 1
                fgtest.wait_until(lambda: fleet.status(sy_grey) == {"locked": 19},
                                  timeout=15, what="SY's grey devices locked")
                # Its score rows: never until the reset, auto from then on.
                fgtest.wait_until(
                    lambda: any(r["mode"] == "auto" for r in rows_of(topics.scores, "SY",
                                                                      t_tomb)),
                    timeout=15, what="SY scored with the configured mode")
                modes = [r["mode"] for r in rows_of(topics.scores, "SY", t_restart)]
                first_auto = modes.index("auto")
                assert first_auto > 0 and set(modes[:first_auto]) == {"never"}, modes
                assert set(modes[first_auto:]) == {"auto"}, modes
                print(f"SY locked {(lk['since'] - t_tomb) / 1000:.2f} s after the "
                      "reset was asked for", flush=True)

                # Audited: the reset with actor, reason and target, and the
                # operator's denial under the same action.
                au = wait_audit(topics.audit, lambda a: a["request_id"] == body["request_id"],
                                "the reset audited")
                assert au["action"] == "policy_reset" and au["outcome"] == "ok", au
                assert au["actor"] == "root" and au["role"] == "admin", au
                assert au["target"] == "SY" and au["reason"] == "SY back to the config", au
                assert au["status"] == 200 and au["before"] is None, au
                au = wait_audit(topics.audit, lambda a: a["request_id"] == denied_id,
                                "the operator's denial audited")
                assert au["action"] == "policy_reset" and au["outcome"] == "denied", au
                assert au["actor"] == "alice" and au["status"] == 403, au
        # CU once, SY once: nothing else was ever decided.
        assert [(lk["region"], lk["state"]) for _, lk in lock_records(topics.locks)] == \
            [("CU", "locked"), ("SY", "locked")], lock_records(topics.locks)


def test_unreadable_policies_topic_blocks_every_decision():
    """Fail closed: while the policies topic cannot be read (here: a name
    Kafka refuses, so it never exists), the scorer holds the lease and
    counts check-ins, but decides nothing, although CU is 95% grey; /readyz
    says why."""
    topics = Topics()
    unusable = "fgtest-unusable-" + "x" * 240  # over Kafka's 249 characters
    with RedisServer() as r, gateway(topics) as gw:
        sc = Scorer(topics, r, {"scorer.policies_topic": unusable}, start=False)
        with sc:
            sc._logf = open(sc.log_path, "ab")
            sc.proc = subprocess.Popen(sc.argv(), stdin=subprocess.DEVNULL,
                                       stdout=sc._logf, stderr=subprocess.STDOUT)
            fleet = Fleet(gw, interval=0.5)
            fleet.add("CU", 20, 19)
            with fleet:
                def leader():
                    try:
                        return sc.metric("fleetgate_scorer_leader") == 1
                    except OSError:  # not listening yet
                        return False
                fgtest.wait_until(leader, timeout=20, what="the scorer holding the lease")
                fgtest.wait_until(lambda: fleet.rounds >= 4, timeout=20,
                                  what="four rounds of check-ins")
                # Long enough for `for` (1 s) and several ticks (0.5 s).
                time.sleep(3.0)
                status, body = sc.admin("/readyz")
                assert status == 503 and b"policies_catching_up" in body, (status, body)
                assert sc.metric("fleetgate_scorer_ticks_total") == 0
                assert sc.metric("fleetgate_policy_table_ready") == 0
                assert lock_records(topics.locks) == []
                assert score_rows(topics.scores) == []
            assert "policies_topic_unavailable" in sc.log(), sc.log_tail()


if __name__ == "__main__":
    fgtest.run()
