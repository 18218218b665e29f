#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Report of bench/scorer_run: reads the runs (JSON lines), the fills, the
# machine facts, the latency result and the perf profile, and writes a
# markdown report (medians with min-max over rounds) and one JSON file.
#
# Usage: report.py --runs F --fills F --meta F [--latency F] [--perf F]
#                  --json-out F --md-out F
import argparse
import json
import os
import statistics
import sys

TARGET_CPU_US = 1.0
TARGET_LAT_MS = 2000
LABELS = {
    "scorer": "fleetgate-scorer",
    "naive": "naive baseline (INCR + PFADD per check-in)",
    "kcat": "kcat -C (raw consume ceiling), librdkafka fetch defaults",
    "kcat-fw100": "kcat -C -X fetch.wait.max.ms=100 (the scorer's fetch wait)",
}


def load_lines(path):
    out = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def derive(r):
    """Adds per-check-in figures to one run."""
    n = r["n"]
    d = dict(r)
    d["cps"] = n / r["wall_s"] if r["wall_s"] > 0 else None
    d["cpu_us"] = r["cpu_s"] * 1e6 / n
    steady = r["wall_s"] - r.get("first_s", 0)
    d["steady_rate"] = n / steady if steady > 0 else None
    if r.get("broker_cpu_s") is not None:
        d["broker_ms_10k"] = r["broker_cpu_s"] * 1e3 * 1e4 / n
    cs = r.get("cmdstats")
    if cs is not None:
        calls = sum(v["calls"] for v in cs.values()) - r.get("harness_mget", 0)
        d["redis_calls"] = calls
        d["redis_calls_10k"] = calls * 1e4 / n
        scripts = 0
        for k in ("evalsha", "eval"):
            if k in cs:
                scripts += cs[k]["calls"] - cs[k]["failed"]
        d["script_applies"] = scripts
        d["noscript"] = cs.get("evalsha", {}).get("failed", 0)
        d["redis_usec"] = sum(v["usec"] for v in cs.values())
    if r.get("redis_cpu_s") is not None:
        d["redis_ms_10k"] = r["redis_cpu_s"] * 1e3 * 1e4 / n
    if r.get("batches"):
        d["region_batches_max"] = r["batches"] * r["regions"]
        if d.get("script_applies"):
            d["calls_per_apply"] = d["redis_calls"] / d["script_applies"]
    return d


def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def fmt(m, digits=2, scale=1.0, integer=False):
    if m is None:
        return "-"
    a, lo, hi = (x * scale for x in m)
    if integer:
        s = "{:,.0f}".format(a)
        if lo != hi:
            s += " ({:,.0f}-{:,.0f})".format(lo, hi)
        return s
    s = "{:,.{d}f}".format(a, d=digits)
    if lo != hi:
        s += " ({:,.{d}f}-{:,.{d}f})".format(lo, hi, d=digits)
    return s


def group(runs, **kw):
    return [r for r in runs if all(r.get(k) == v for k, v in kw.items())]


def agg(rs, key):
    return med([r.get(key) for r in rs])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--fills", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--latency")
    ap.add_argument("--perf")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--md-out", required=True)
    a = ap.parse_args()

    meta = {}
    with open(a.meta) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            meta[k] = v
    runs = [derive(r) for r in load_lines(a.runs)]
    fills = load_lines(a.fills)
    lat = None
    if a.latency and os.path.exists(a.latency):
        with open(a.latency) as f:
            lat = json.load(f)

    md = []
    w = md.append
    w("Machine: {} ({} CPUs), {}, kernel {}, {}. Load average before/after: {} / {}."
      .format(meta.get("cpu"), meta.get("nproc"), meta.get("memory"),
              meta.get("kernel"), meta.get("os"), meta.get("load_before"),
              meta.get("load_after", "?")))
    w("Versions: git {}, librdkafka {}, hiredis {}, Redis {}, Kafka {} ({}), kcat {}, {}."
      .format(meta.get("git"), meta.get("librdkafka"), meta.get("hiredis"),
              meta.get("redis"), meta.get("kafka"), meta.get("java"),
              meta.get("kcat"), meta.get("cc")))
    w("Command: `{}` ({}), {} round(s) per case, medians with (min-max)."
      .format(meta.get("command"), meta.get("date"), meta.get("rounds")))
    w("")
    for fl in fills:
        w("- topic `{}`: {:,} records, {:,} devices ({:,} grey), {} regions, filled in {:.1f} s"
          .format(fl["topic"], fl["records"], fl["devices"], fl["grey_devices"],
                  fl["regions"], fl["seconds"]))
    w("")

    # Part 1
    count = [r for r in runs if r["part"] == "count"]
    w("### 1. Counting {:,} check-ins, Kafka to Redis".format(count[0]["n"] if count else 0))
    w("")
    w("| consumer | wall s | check-ins/s | steady check-ins/s | process CPU s | CPU µs / check-in | Redis commands / 10k | Redis CPU ms / 10k | broker CPU ms / 10k |")
    w("|---|---|---|---|---|---|---|---|---|")
    summary = {"count": {}, "scale": {}, "latency": lat}
    for kind in ("scorer", "naive", "kcat", "kcat-fw100"):
        rs = group(count, kind=kind)
        if not rs:
            continue
        row = {k: agg(rs, k) for k in ("wall_s", "cps", "steady_rate", "cpu_s", "cpu_us",
                                       "redis_calls_10k", "redis_ms_10k", "broker_ms_10k",
                                       "first_s", "batches", "script_applies", "noscript")}
        summary["count"][kind] = row
        w("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            LABELS[kind], fmt(row["wall_s"]), fmt(row["cps"], integer=True),
            fmt(row["steady_rate"], integer=True), fmt(row["cpu_s"]), fmt(row["cpu_us"]),
            fmt(row["redis_calls_10k"], 1) if row["redis_calls_10k"] else "-",
            fmt(row["redis_ms_10k"]) if row["redis_ms_10k"] else "-",
            fmt(row["broker_ms_10k"])))
    w("")
    sc = summary["count"].get("scorer")
    if sc:
        w("Scorer: first check-in counted {} s after start (group join, partition load); "
          "{} batches, {} region applies (scripts), {} NOSCRIPT retries at start-up."
          .format(fmt(sc["first_s"]), fmt(sc["batches"], integer=True),
                  fmt(sc["script_applies"], integer=True), fmt(sc["noscript"], integer=True)))
        w("")
    # Redis commands by type, first round of each consumer
    for kind in ("scorer", "naive"):
        rs = group(count, kind=kind)
        if rs and rs[0].get("cmdstats"):
            cs = rs[0]["cmdstats"]
            parts = ", ".join("{} {:,}".format(k, v["calls"]) for k, v in
                              sorted(cs.items(), key=lambda kv: -kv[1]["calls"]))
            w("- Redis commands of {} (round 1, including those run by scripts): {}"
              .format(kind, parts))
    w("")

    # Part 2
    scale = [r for r in runs if r["part"] in ("count", "scale") and r["kind"] == "scorer"]
    if any(r["part"] == "scale" for r in scale):
        w("### 2. Redis work against regions x batches (scorer)")
        w("")
        w("| topic | regions | check-ins | batches | region applies (scripts) | Redis commands | commands / apply | Redis commands / 10k check-ins | Redis CPU ms / 10k | scorer CPU µs / check-in |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for topic in ("sbench.r5", "sbench.r50", "sbench.r500", "sbench.r50x2"):
            rs = group(scale, topic=topic)
            if not rs:
                continue
            row = {k: agg(rs, k) for k in ("batches", "script_applies", "redis_calls",
                                           "calls_per_apply", "redis_calls_10k",
                                           "redis_ms_10k", "cpu_us")}
            summary["scale"][topic] = dict(row, regions=rs[0]["regions"], n=rs[0]["n"])
            w("| {} | {} | {:,} | {} | {} | {} | {} | {} | {} | {} |".format(
                topic, rs[0]["regions"], rs[0]["n"], fmt(row["batches"], integer=True),
                fmt(row["script_applies"], integer=True), fmt(row["redis_calls"], integer=True),
                fmt(row["calls_per_apply"], 1), fmt(row["redis_calls_10k"], 1),
                fmt(row["redis_ms_10k"]), fmt(row["cpu_us"])))
        w("")

    live = [r for r in runs if r["part"] == "live"]
    if live:
        w("### 2b. Live streams (50 regions): Redis work per second")
        w("")
        w("The topic is empty when the consumer starts; the filler then produces a "
          "steady rate for a fixed time. Measured from the first record until every "
          "check-in is in Redis.")
        w("")
        w("| consumer | check-ins/s | check-ins | batches / s | region applies / s | Redis commands / s | Redis commands / 10k | Redis CPU % of a core | Redis CPU ms / 10k | consumer CPU µs / check-in |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        summary["live"] = {}
        for rate in sorted({r["rate"] for r in live}):
            for kind in ("scorer", "naive"):
                rs = group(live, kind=kind, rate=rate)
                if not rs:
                    continue
                for r in rs:
                    r["batches_s"] = r["batches"] / r["wall_s"] if r.get("batches") else None
                    r["applies_s"] = (r["script_applies"] / r["wall_s"]
                                      if r.get("script_applies") else None)
                    r["calls_s"] = r["redis_calls"] / r["wall_s"]
                    r["redis_pct"] = r["redis_cpu_s"] * 100 / r["wall_s"]
                row = {k: agg(rs, k) for k in ("batches_s", "applies_s", "calls_s",
                                               "redis_calls_10k", "redis_pct",
                                               "redis_ms_10k", "cpu_us")}
                summary["live"]["%s-%d" % (kind, rate)] = row
                w("| {} | {:,} | {:,} | {} | {} | {} | {} | {} | {} | {} |".format(
                    kind, rate, rs[0]["n"], fmt(row["batches_s"], 1), fmt(row["applies_s"], integer=True),
                    fmt(row["calls_s"], integer=True), fmt(row["redis_calls_10k"], integer=True),
                    fmt(row["redis_pct"], 1), fmt(row["redis_ms_10k"]), fmt(row["cpu_us"])))
        w("")

    # Part 3
    if lat:
        w("### 3. Decision to directive")
        w("")
        w("{} regions of {} devices, one check-in per device per second through the "
          "gateway; region i turns 95 % grey at 15 s + 3 s x i. Locked: {}, seen locked "
          "by a device: {}.".format(lat["regions"], lat["devices_per_region"],
                                    lat["regions_locked"], lat["regions_seen_locked"]))
        w("")
        w("| interval | p50 ms | p90 ms | p99 ms | min ms | max ms |")
        w("|---|---|---|---|---|---|")
        for key, label in (("decision_to_directive_ms", "decision (`since`) to first `locked` answer"),
                           ("record_to_directive_ms", "lock record's Kafka timestamp to first `locked` answer"),
                           ("decision_to_record_ms", "decision (`since`) to the record's Kafka timestamp")):
            s = lat.get(key)
            if s:
                w("| {} | {} | {} | {} | {} | {} |".format(label, s["p50"], s["p90"], s["p99"],
                                                         s["min"], s["max"]))
        w("")
        cs = lat.get("cmdstats", {})
        ev = sum(cs.get(k, {}).get("calls", 0) for k in ("mget", "pfcount"))
        if lat.get("ticks"):
            w("Evaluator: {} ticks; scorer CPU {:.2f} s and Redis CPU {:.2f} s over the {} s run "
              "(counting included); window reads (MGET + 2 PFCOUNT per region) {:,}."
              .format(lat["ticks"], lat["scorer_cpu_s"], lat["redis_cpu_s"], lat["duration_s"], ev))
            w("")

    # Targets
    w("### Targets")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")
    if sc:
        cpu = sc["cpu_us"][0]
        w("| scorer CPU <= {:.1f} µs per check-in | {:.2f} µs (median) | {} |".format(
            TARGET_CPU_US, cpu, "yes" if cpu <= TARGET_CPU_US else
            "no, {:.0f} % over".format((cpu / TARGET_CPU_US - 1) * 100)))
    if summary["scale"]:
        w("| Redis work grows with regions x batches, not check-ins | see part 2 | see part 2 |")
    if lat and lat.get("decision_to_directive_ms"):
        p99 = lat["decision_to_directive_ms"]["p99"]
        w("| decision to directive < {} ms at p99 | {} ms (n = {}) | {} |".format(
            TARGET_LAT_MS, p99, lat["decision_to_directive_ms"]["n"],
            "yes" if p99 < TARGET_LAT_MS else "no"))
    w("")

    if a.perf and os.path.exists(a.perf):
        w("### Scorer profile (perf, self time)")
        w("")
        w("```")
        with open(a.perf) as f:
            w(f.read().rstrip())
        w("```")
        w("")

    text = "\n".join(md) + "\n"
    with open(a.md_out, "w") as f:
        f.write(text)
    with open(a.json_out, "w") as f:
        json.dump({"meta": meta, "fills": fills, "runs": runs, "summary": summary}, f, indent=1)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
