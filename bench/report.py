#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Turns the raw records of one bench/run (rounds.jsonl, rss.jsonl,
meta.tsv) into medians per case, ratios to the nginx+Lua peer, the issue's
targets, a markdown report on stdout, and the results JSON. Exit status 0,
or 3 when a case had errors or the gateway's acknowledged count did not
cover what wrk saw (the report says which)."""

import argparse
import json
import statistics
import sys

# The peer rows the ratios are taken against: the conf as given, and the
# same conf with the sync producer's unused ring buffer sized 1.
REF = "peer-sync"
REF_LEAN = "peer-sync-lean"

# The targets, checked on the one-worker gateway rows.
TARGET_JSON_US = 8.0
TARGET_BATCH_US = 1.5
TARGET_RATIO = 0.6
TARGET_RSS_MB = 100.0


def load_jsonl(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def load_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            if key:
                meta[key] = value
    return meta


def per_round(r):
    """Derived figures of one round."""
    w = r["wrk"]
    e = w["errors"]
    secs = w["duration_us"] / 1e6
    ok = w["requests"] - e["status"]
    tick_us = 1e6 / r["clk_tck"]
    server_us = r["server_ticks"] * tick_us
    broker_us = r["broker_ticks"] * tick_us
    checkins = ok * r["per_req"]
    d = {
        "round": r["round"],
        "requests": w["requests"],
        "ok": ok,
        "errors": {k: v for k, v in e.items() if v},
        "req_s": w["requests"] / secs,
        "checkins_s": checkins / secs,
        "server_cpu_s": server_us / 1e6,
        "cpu_us_req": server_us / ok if ok else None,
        "cpu_us_checkin": server_us / checkins if checkins else None,
        "broker_us_checkin": broker_us / checkins if checkins else None,
        "server_cores": server_us / 1e6 / secs,
        "machine_busy_cores": r["machine_busy_ticks"] / r["clk_tck"] / secs,
        "load1": r["load1"],
        "p50_ms": w["latency_us"]["p"]["50"] / 1000,
        "p99_ms": w["latency_us"]["p"]["99"] / 1000,
        "accepted_delta": r.get("accepted_delta"),
        "verified": None,
    }
    if r.get("accepted_delta") is not None:
        d["verified"] = r["accepted_delta"] >= checkins
    return d


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rounds):
    cases = {}
    for r in rounds:
        c = cases.setdefault(r["case"], {
            "case": r["case"], "label": r["label"], "group": r["group"],
            "per_req": r["per_req"], "rounds": []})
        c["rounds"].append(per_round(r))
    for c in cases.values():
        rs = c["rounds"]
        for k in ("req_s", "checkins_s", "cpu_us_req", "cpu_us_checkin",
                  "broker_us_checkin", "server_cores", "machine_busy_cores",
                  "p50_ms", "p99_ms", "load1"):
            c[k] = median([x[k] for x in rs])
        cpu = [x["cpu_us_checkin"] for x in rs if x["cpu_us_checkin"]]
        c["cpu_us_checkin_min"] = min(cpu) if cpu else None
        c["cpu_us_checkin_max"] = max(cpu) if cpu else None
        errs = {}
        for x in rs:
            for k, v in x["errors"].items():
                errs[k] = errs.get(k, 0) + v
        c["errors"] = errs
        ver = [x["verified"] for x in rs if x["verified"] is not None]
        c["verified"] = all(ver) if ver else None
        c["accepted_delta_total"] = (sum(x["accepted_delta"] for x in rs)
                                     if ver else None)
        c["ok_checkins_total"] = sum(x["ok"] for x in rs) * c["per_req"]
    for ref_name, key in ((REF, "x_peer_sync"), (REF_LEAN, "x_peer_sync_lean")):
        ref = cases.get(ref_name, {}).get("cpu_us_checkin")
        for c in cases.values():
            v = c["cpu_us_checkin"]
            c[key] = v / ref if ref and v is not None else None
    return list(cases.values())


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def rss_by_group(rss):
    out = {}
    for x in rss:
        out.setdefault(x["group"], {})[x["kind"]] = x
    return out


def check(ok, text):
    return ("met" if ok else "MISSED") + (f" ({text})" if text else "")


def targets(cases, rss):
    by = {c["case"]: c for c in cases}
    out = []

    def row(name, value, limit, unit, fmt_digits=2):
        if value is None:
            out.append({"target": name, "value": None, "limit": limit,
                        "met": None, "text": "not measured in this run"})
            return
        met = value <= limit
        text = (f"{value:.{fmt_digits}f}{unit} vs <= {limit}{unit}" if met else
                f"{value:.{fmt_digits}f}{unit} vs <= {limit}{unit}: "
                f"{value - limit:.{fmt_digits}f}{unit} "
                f"({(value / limit - 1) * 100:.0f} %) over")
        out.append({"target": name, "value": value, "limit": limit,
                     "met": met, "text": text})

    row("single JSON check-in: gateway CPU per acknowledged check-in "
        "(1 worker)", by.get("gw1-json", {}).get("cpu_us_checkin"),
        TARGET_JSON_US, " us")
    row("msgpack batch of 100: gateway CPU per check-in (1 worker)",
        by.get("gw1-batch100", {}).get("cpu_us_checkin"), TARGET_BATCH_US,
        " us")
    row("single JSON check-in: CPU vs the nginx+Lua /checkin/sync peer "
        "(conf as given)", by.get("gw1-json", {}).get("x_peer_sync"),
        TARGET_RATIO, "x")
    row("single JSON check-in: CPU vs the nginx+Lua /checkin/sync peer "
        "(lean variant, for reference)",
        by.get("gw1-json", {}).get("x_peer_sync_lean"), TARGET_RATIO, "x")
    worst = None
    for group in ("gw1", "gw2"):
        h = rss.get(group, {}).get("conns")
        if h and h.get("rss_kb"):
            mb = h["rss_kb"] / 1024
            worst = mb if worst is None else max(worst, mb)
    row("gateway RSS with 5,000 open keep-alive connections", worst,
        TARGET_RSS_MB, " MB", 1)
    return out


def markdown(cases, rss, tg, meta, problems):
    lines = []
    lines.append(f"fleetgate gateway benchmark, {meta.get('date', '?')} "
                 f"(`{meta.get('command', 'bench/run')}`)")
    lines.append("")
    lines.append(f"Machine: {meta.get('cpu', '?')}, {meta.get('nproc', '?')} "
                 f"CPUs, {meta.get('memory', '?')}, kernel {meta.get('kernel', '?')}, "
                 f"{meta.get('os', '?')}. Load generator, servers and the Kafka "
                 "broker share these CPUs.")
    lines.append(f"Versions: fleetgate {meta.get('git', '?')}, librdkafka "
                 f"{meta.get('librdkafka', '?')}, libevent {meta.get('libevent', '?')}, "
                 f"Kafka {meta.get('kafka', '?')} ({meta.get('java', '?')}), "
                 f"{meta.get('nginx', '?')} + lua-nginx-kafka "
                 f"{meta.get('lua_nginx_kafka', '?')} + libnginx-mod-http-lua "
                 f"{meta.get('nginx_lua', '?')}, {meta.get('wrk', '?')}, "
                 f"{meta.get('cc', '?')}.")
    lines.append(f"Load: wrk -t1 -c{meta.get('conns_wrk', '64')} --latency, "
                 f"{meta.get('rounds', '?')} rounds of {meta.get('duration', '?')} s "
                 f"per case after a {meta.get('warmup', '?')} s warm-up; figures are "
                 "medians over the rounds. CPU is the server's utime+stime from "
                 "/proc (all threads; nginx master+worker), divided by the 2xx "
                 "answers (x100 for batches).")
    if meta.get("gateway_set"):
        lines.append(f"Gateway settings added for this run: `{meta['gateway_set']}`.")
    loads = [x["load1"] for c in cases for x in c["rounds"]]
    busy = [x["machine_busy_cores"] for c in cases for x in c["rounds"]]
    if loads:
        lines.append(f"Machine load during the rounds (everything on the machine, "
                     f"including other users): 1-min load average median "
                     f"{statistics.median(loads):.1f} ({min(loads):.1f}-{max(loads):.1f}), "
                     f"busy CPUs median {statistics.median(busy):.2f} "
                     f"({min(busy):.2f}-{max(busy):.2f}) of {meta.get('nproc', '?')}.")
    lines.append("")
    lines.append("| case | req/s | check-ins/s | CPU us/req | CPU us/check-in "
                 "(min-max) | x peer sync | x peer sync lean | broker us/check-in "
                 "| p50 ms | p99 ms | RSS MB | errors / check |")
    lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    rg = rss_by_group(rss)
    for c in cases:
        after = rg.get(c["group"], {}).get("after_run")
        rss_mb = after["rss_kb"] / 1024 if after else None
        flags = []
        if c["errors"]:
            flags.append("ERRORS " + ", ".join(f"{k}={v}" for k, v in
                                               sorted(c["errors"].items())))
        if c["verified"] is True:
            flags.append("acked >= 2xx")
        elif c["verified"] is False:
            flags.append("VERIFY FAILED: acked "
                         f"{c['accepted_delta_total']} < {c['ok_checkins_total']}")
        rng = ""
        if c["cpu_us_checkin_min"] is not None and len(c["rounds"]) > 1:
            rng = (f" ({fmt(c['cpu_us_checkin_min'], 2)}-"
                   f"{fmt(c['cpu_us_checkin_max'], 2)})")
        lines.append(
            f"| {c['label']} | {fmt(c['req_s'], 0)} | {fmt(c['checkins_s'], 0)} "
            f"| {fmt(c['cpu_us_req'])} | {fmt(c['cpu_us_checkin'], 2)}{rng} "
            f"| {fmt(c['x_peer_sync'], 3)} | {fmt(c['x_peer_sync_lean'], 2)} "
            f"| {fmt(c['broker_us_checkin'])} | {fmt(c['p50_ms'], 2)} "
            f"| {fmt(c['p99_ms'], 1)} | {fmt(rss_mb)} | "
            f"{'; '.join(flags) if flags else 'none'} |")
    lines.append("")
    held = [(g, v["conns"]) for g, v in rg.items() if "conns" in v]
    if held:
        lines.append("Resident memory with idle keep-alive connections (one "
                     "check-in sent on each, all answered, then held open):")
        lines.append("")
        lines.append("| server | connections | answered (status) | open (client) "
                     "| open (server's gauge) | RSS before MB "
                     "| RSS with connections MB | KB per connection |")
        lines.append("|---|--:|---|--:|--:|--:|--:|--:|")
        names = {c["group"]: c["label"].split(":")[0] for c in cases}
        for g, h in held:
            per = ((h["rss_kb"] - h["rss_before_kb"]) / h["conns"]
                   if h["conns"] else 0)
            st = ", ".join(f"{k}: {v}" for k, v in sorted(h["statuses"].items()))
            lines.append(f"| {names.get(g, g)} | {h['conns']} | {h['answered']} "
                         f"({st}) | {h.get('open_at_rss', 'n/a')} "
                         f"| {fmt(h.get('server_conns'), 0)} "
                         f"| {h['rss_before_kb'] / 1024:.1f} "
                         f"| {h['rss_kb'] / 1024:.1f} | {per:.1f} |")
        lines.append("")
    lines.append("Targets (issue), on the one-worker gateway:")
    lines.append("")
    for t in tg:
        state = ("not measured" if t["met"] is None else
                 "met" if t["met"] else "MISSED")
        lines.append(f"- {t['target']}: **{state}**, {t['text']}")
    lines.append("")
    if problems:
        lines.append("Problems in this run:")
        lines.append("")
        for p in problems:
            lines.append(f"- {p}")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", required=True, help="rounds.jsonl")
    ap.add_argument("--rss", required=True, help="rss.jsonl")
    ap.add_argument("--meta", required=True, help="meta.tsv")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--md-out", required=True)
    args = ap.parse_args()

    rounds = load_jsonl(args.rounds)
    rss = load_jsonl(args.rss)
    meta = load_meta(args.meta)
    cases = summarize(rounds)
    rg = rss_by_group(rss)
    tg = targets(cases, rg)

    problems = []
    for c in cases:
        if c["errors"]:
            problems.append(f"{c['case']}: wrk reported errors {c['errors']}")
        if c["verified"] is False:
            problems.append(
                f"{c['case']}: the gateway counted {c['accepted_delta_total']} "
                f"acknowledged check-ins, fewer than the {c['ok_checkins_total']} "
                "wrk saw answered 2xx")
    for g, v in rg.items():
        h = v.get("conns")
        if h and (h["answered"] != h["conns"] or h.get("open_at_rss") != h["conns"]
                  or h.get("server_conns") not in (None, h["conns"])):
            problems.append(f"{g}: of {h['conns']} held connections "
                            f"{h['answered']} were answered and "
                            f"{h.get('open_at_rss')} still open at the RSS reading "
                            f"(server's count: {h.get('server_conns')})")

    md = markdown(cases, rss, tg, meta, problems)
    result = {"meta": meta, "cases": cases, "rss": rss, "targets": tg,
              "problems": problems, "raw_rounds": rounds}
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(args.md_out, "w", encoding="utf-8") as f:
        f.write(md + "\n")
    print(md)
    return 3 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
