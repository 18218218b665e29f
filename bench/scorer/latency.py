#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Decision-to-directive latency for bench/scorer_run: pairs each region's
# first `locked` record on the lock topic (its `since` and its Kafka
# timestamp, from a kcat dump) with the first `locked` answer a simulated
# device got for that region (fleetsim's lock_seen log line), and prints
# one JSON object with the per-region latencies and their percentiles.
#
# Usage: latency.py --locks DUMP --fleetsim-log LOG [--expect N]
#   DUMP is `kcat -C -t LOCKS -o beginning -e -f '%k\t%T\t%S\t%s'` output.
import argparse
import datetime
import json
import math
import re
import sys

import msgpack


def read_dump(path):
    """Yields (key, kafka_ts_ms, value bytes or None) from a kcat dump."""
    data = open(path, "rb").read()
    i = 0
    n = len(data)
    while i < n:
        t1 = data.index(b"\t", i)
        t2 = data.index(b"\t", t1 + 1)
        t3 = data.index(b"\t", t2 + 1)
        key = data[i:t1].decode()
        ts = int(data[t1 + 1:t2])
        size = int(data[t2 + 1:t3])
        if size < 0:  # tombstone
            yield key, ts, None
            i = t3 + 1
            continue
        yield key, ts, data[t3 + 1:t3 + 1 + size]
        i = t3 + 1 + size


def parse_ts(s):
    """logfmt ts=2026-11-27T21:57:52.386Z -> ms since the epoch."""
    d = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    d = d.replace(tzinfo=datetime.timezone.utc)
    return int(round(d.timestamp() * 1000))


def pct(vals, p):
    """Nearest-rank percentile."""
    s = sorted(vals)
    if not s:
        return None
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


def summary(vals):
    if not vals:
        return None
    return {"n": len(vals), "p50": pct(vals, 50), "p90": pct(vals, 90),
            "p99": pct(vals, 99), "min": min(vals), "max": max(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--locks", required=True)
    ap.add_argument("--fleetsim-log", required=True)
    ap.add_argument("--expect", type=int, default=0)
    a = ap.parse_args()

    locks = {}  # region -> first locked record
    for key, kts, val in read_dump(a.locks):
        if val is None:
            continue
        rec = msgpack.unpackb(val, raw=False)
        if rec.get("state") != "locked" or key in locks:
            continue
        locks[key] = {"since": rec["since"], "kafka_ts": kts,
                      "token": rec.get("token")}

    seen = {}  # region -> first locked answer (ms)
    line_re = re.compile(r"^ts=(\S+) .*\bmsg=lock_seen\b.*\bregion=(\S+)")
    with open(a.fleetsim_log, errors="replace") as f:
        for line in f:
            m = line_re.match(line)
            if m and m.group(2) not in seen:
                seen[m.group(2)] = parse_ts(m.group(1))

    rows = []
    for region in sorted(locks):
        lk = locks[region]
        row = {"region": region, "since": lk["since"],
               "kafka_ts": lk["kafka_ts"], "first_locked_answer": seen.get(region)}
        if region in seen:
            row["since_to_answer_ms"] = seen[region] - lk["since"]
            row["record_to_answer_ms"] = seen[region] - lk["kafka_ts"]
        row["since_to_record_ms"] = lk["kafka_ts"] - lk["since"]
        rows.append(row)
    d2a = [r["since_to_answer_ms"] for r in rows if "since_to_answer_ms" in r]
    r2a = [r["record_to_answer_ms"] for r in rows if "record_to_answer_ms" in r]
    d2r = [r["since_to_record_ms"] for r in rows]
    out = {
        "regions_locked": len(locks),
        "regions_seen_locked": len([r for r in rows if r["first_locked_answer"]]),
        "expected": a.expect,
        "decision_to_directive_ms": summary(d2a),
        "record_to_directive_ms": summary(r2a),
        "decision_to_record_ms": summary(d2r),
        "rows": rows,
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    if a.expect and len(d2a) < a.expect:
        sys.exit(3)


if __name__ == "__main__":
    main()
