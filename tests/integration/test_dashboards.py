# SPDX-License-Identifier: Apache-2.0
"""The monitoring files match the daemons: every metric that
deploy/prometheus/rules.yml (recording rules and alerts) and the Grafana
dashboard deploy/grafana/fleetgate.json read is one that a real gateway, a
real scorer and a real control service export on /metrics, with the labels
and label values the queries select on, scraped from the admin ports that
config/*.ini set. An operator would otherwise find an empty panel, or an
alert that never fires, on the day they need it.

Also: prometheus.yml and rules.yml parse (python3-yaml), every alert has a
severity and a summary, the dashboard parses, its panel ids are unique, its
panels do not overlap, and every data panel has the ${DS_PROMETHEUS}
datasource and non-empty queries."""

import configparser
import json
import os
import re
import socket

import yaml

import fgtest
import test_control
from fgtest import RedisServer
from test_scorer_decisions import Scorer, Topics

PROM_DIR = os.path.join(fgtest.SOURCE_DIR, "deploy", "prometheus")
PROM_YML = os.path.join(PROM_DIR, "prometheus.yml")
RULES_YML = os.path.join(PROM_DIR, "rules.yml")
DASHBOARD = os.path.join(fgtest.SOURCE_DIR, "deploy", "grafana", "fleetgate.json")

DS_UID = "${DS_PROMETHEUS}"
# Scrape jobs and where their admin port is configured.
JOBS = {"gateway": ("gateway.ini", "gateway"), "scorer": ("scorer.ini", "scorer"),
        "control": ("control.ini", "control")}
ALERT_NAME_RE = re.compile(r"^Fleetgate[A-Z][A-Za-z0-9]*$")
DURATION_RE = re.compile(r"^[0-9]+[smh]$")
# Labels Prometheus attaches to every scraped series (not in /metrics).
TARGET_LABELS = {"job", "instance"}
# Series Prometheus makes up per target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
MATCHER_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*'
                        r'"((?:[^"\\]|\\.)*)"\s*,?')
# Words that are PromQL syntax, not series names: operators, and aggregations
# (which may be followed by by/without rather than by their argument).
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
            "count_values", "bottomk", "topk", "quantile"}
# Followed by a parenthesised label list.
LABEL_LIST_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


# ---------------------------------------------------------------------------
# A small PromQL reader: enough to list vector selectors and grouping labels.


def _skip_quoted(expr, i):
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" else 1
    return i + 1


def _skip_spaces(expr, i):
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def parse_promql(expr):
    """Returns (selectors, grouping labels) of expr: selectors as a list of
    (metric name, [(label, op, value)]), labels as the set named in by(),
    without(), on() and ignoring() clauses. Raises ValueError on unbalanced
    brackets or a malformed label matcher."""
    selectors, grouping = [], set()
    depth = 0
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = _skip_quoted(expr, i)
        elif c == "[":
            end = expr.find("]", i)
            if end < 0:
                raise ValueError(f"unclosed '[' in {expr!r}")
            i = end + 1
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {expr!r}")
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            while i < n and (expr[i].isalnum() or expr[i] == "."):
                i += 1
        elif c.isalpha() or c in "_:":
            start = i
            while i < n and (expr[i].isalnum() or expr[i] in "_:"):
                i += 1
            word = expr[start:i]
            j = _skip_spaces(expr, i)
            nxt = expr[j] if j < n else ""
            if word in LABEL_LIST_WORDS:
                if nxt == "(":
                    end = expr.find(")", j)
                    if end < 0:
                        raise ValueError(f"unclosed {word}( in {expr!r}")
                    grouping.update(x.strip() for x in expr[j + 1:end].split(",")
                                    if x.strip())
                    i = end + 1
            elif nxt == "(" or word.lower() in KEYWORDS:
                continue  # a function, an aggregation or an operator
            else:
                matchers = []
                if nxt == "{":
                    end = j + 1
                    while True:
                        end = _skip_spaces(expr, end)
                        if end >= n:
                            raise ValueError(f"unclosed '{{' in {expr!r}")
                        if expr[end] == "}":
                            break
                        m = MATCHER_RE.match(expr, end)
                        if not m:
                            raise ValueError(f"bad label matcher at {expr[end:]!r}")
                        matchers.append((m.group(1), m.group(2), m.group(3)))
                        end = m.end()
                    i = end + 1
                selectors.append((word, matchers))
        elif c == "{":
            raise ValueError(f"selector without a metric name in {expr!r}")
        else:
            i += 1
    if depth:
        raise ValueError(f"unbalanced '(' in {expr!r}")
    return selectors, grouping


# ---------------------------------------------------------------------------
# The files


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _rules():
    """Every rule of rules.yml, checking the groups' shape on the way."""
    doc = load_yaml(RULES_YML)
    assert isinstance(doc, dict) and isinstance(doc.get("groups"), list), \
        "rules.yml: no groups list"
    group_names = set()
    for group in doc["groups"]:
        name = group.get("name")
        assert name and name not in group_names, f"rules.yml: group name {name!r}"
        group_names.add(name)
        assert group.get("rules"), f"rules.yml: group {name} has no rules"
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), \
                f"rules.yml: a rule is a record or an alert: {rule}"
            yield rule


def load_alerts():
    """{alert name: rule} of rules.yml: a Fleetgate* name, an expr, a
    duration in for (when given), severity warning or critical, and a
    summary."""
    alerts = {}
    for rule in _rules():
        name = rule.get("alert")
        if name is None:
            continue
        assert isinstance(name, str) and ALERT_NAME_RE.match(name), \
            f"rules.yml: bad alert name {name!r}"
        assert name not in alerts, f"rules.yml: alert {name} twice"
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), \
            f"rules.yml: {name} has no expr"
        assert DURATION_RE.match(str(rule.get("for", "0s"))), \
            f"rules.yml: {name}: bad for {rule.get('for')!r}"
        assert (rule.get("labels") or {}).get("severity") in ("warning", "critical"), \
            f"rules.yml: {name}: severity must be warning or critical"
        assert (rule.get("annotations") or {}).get("summary"), \
            f"rules.yml: {name} has no summary"
        alerts[name] = rule
    return alerts


def load_rules():
    """{record name: expr} of rules.yml, checking its shape on the way."""
    records = {}
    for rule in _rules():
        if "alert" in rule:
            continue
        record, expr = rule.get("record"), rule.get("expr")
        assert isinstance(record, str) and METRIC_NAME_RE.match(record), \
            f"rules.yml: bad record name {record!r}"
        assert ":" in record, f"rules.yml: {record} is not level:metric:operation"
        assert record not in records, f"rules.yml: {record} recorded twice"
        assert isinstance(expr, str) and expr.strip(), f"rules.yml: {record} has no expr"
        records[record] = expr
    return records


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(dash):
    """Every panel, with the panels nested in collapsed rows."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(dash):
    """[(panel title, expr)] of every query of every data panel."""
    return [(p.get("title"), t.get("expr", ""))
            for p in all_panels(dash) if p.get("type") != "row"
            for t in p.get("targets", [])]


# ---------------------------------------------------------------------------
# What the daemons export (started once, on first use)

_exported = {}


def series_labels(series):
    """'name{a="1",b="2"}' -> ('name', {'a': '1', 'b': '2'})."""
    name, _, rest = series.partition("{")
    return name, dict(LABEL_RE.findall(rest))


def exported():
    """{job: {metric series name: [labels dict of each series]}} of a real
    gateway (after a valid check-in, an invalid one and a malformed request,
    so that the lazily registered series exist), a real scorer following a
    policy topic, and a real control service with Redis configured (after
    an API request: its per-route series are registered on first use)."""
    if _exported:
        return _exported
    texts = {}
    with fgtest.Gateway() as gw:
        status, _, body = gw.post_json("/v1/checkin", {
            "device_id": "dash-1", "sku_region": "CN", "region": "CU",
            "model": "X1", "seq": 1})
        assert status == 200, (status, body)
        status, _, body = gw.post_json("/v1/checkin", {"device_id": "dash-2"})
        assert status == 400, (status, body)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        fgtest.wait_until(lambda: fgtest.metric(gw.metrics(), "fleetgate_http_rejected_total",
                                                code="400", reason="bad_request"),
                          what="the malformed request in fleetgate_http_rejected_total")
        texts["gateway"] = gw.get("/metrics", admin=True)[2].decode()
    with RedisServer() as redis, Scorer(Topics(), redis) as sc:
        status, body = sc.admin("/metrics")
        assert status == 200, status
        texts["scorer"] = body.decode()
        # librdkafka 2.0.2 aborts when a cooperative-sticky consumer is closed
        # before its first assignment (librdkafka issue 4312, fixed in 2.3.0):
        # stop the scorer only once it has joined its group.
        fgtest.wait_until(lambda: "msg=partitions_assigned" in sc.log(), timeout=30,
                          interval=0.1, what="the scorer's first assignment")
    with test_control.Control(test_control.Topics()) as ctl:
        status, _, body = ctl.call("GET", "/v1/regions", actor="vic")
        assert status == 200, (status, body)
        status, _, body = ctl.request("GET", "/metrics", admin=True)
        assert status == 200, status
        texts["control"] = body.decode()
    for job, text in texts.items():
        out = {}
        for series in fgtest.parse_metrics(text):
            name, labels = series_labels(series)
            out.setdefault(name, []).append(labels)
        _exported[job] = out
    return _exported


def problems_of(expr, exports, records, jobs):
    """What is wrong with expr: a list of messages, empty when every series
    it reads exists with the labels it selects and groups on. exports: as
    exported(); records: recording rules it may read; jobs: the scrape jobs
    of prometheus.yml."""
    try:
        selectors, grouping = parse_promql(expr)
    except ValueError as e:
        return [str(e)]
    out = []
    if not selectors:
        out.append("reads no series")
    seen_labels = set(TARGET_LABELS)
    for name, matchers in selectors:
        if name in records:
            continue
        job_m = [(op, v) for label, op, v in matchers if label == "job"]
        if len(job_m) != 1 or job_m[0][0] not in ("=", "=~"):
            out.append(f"{name}: select one job with job=\"...\" or job=~\"a|b\"")
            continue
        want_jobs = job_m[0][1].split("|") if job_m[0][0] == "=~" else [job_m[0][1]]
        for job in want_jobs:
            if job not in jobs:
                out.append(f"{name}: job {job!r} is not scraped by prometheus.yml")
                continue
            if name in SYNTHETIC:
                continue
            if job not in exports:
                out.append(f"{name}: job {job!r} has no known metrics yet")
                continue
            series = exports[job].get(name)
            if not series:
                out.append(f"{name}: not exported by the {job}")
                continue
            for labels in series:
                seen_labels.update(labels)
            for label, op, value in matchers:
                if label in TARGET_LABELS or op in ("!=", "!~"):
                    continue
                if op == "=":
                    ok = any(s.get(label) == value for s in series)
                else:
                    ok = any(label in s and re.fullmatch(value, s[label]) for s in series)
                if not ok:
                    out.append(f"{name}: no series of the {job} has {label}{op}\"{value}\"")
    for label in grouping - seen_labels:
        out.append(f"groups by {label!r}, a label none of its series has")
    return out


# ---------------------------------------------------------------------------
# Tests


def test_prometheus_yml_scrapes_the_admin_ports_every_5s():
    """prometheus.yml parses, scrapes the gateway, scorer and control jobs
    on the admin ports config/*.ini set, every 5 s, with rules.yml."""
    doc = load_yaml(PROM_YML)
    assert doc["global"]["scrape_interval"] == "5s", doc["global"]
    rule_files = doc.get("rule_files") or []
    assert any(os.path.realpath(os.path.join(PROM_DIR, f)) == os.path.realpath(RULES_YML)
               for f in rule_files), rule_files
    jobs = {}
    for sc in doc["scrape_configs"]:
        assert sc["job_name"] not in jobs, f"job {sc['job_name']} twice"
        assert sc.get("metrics_path", "/metrics") == "/metrics", sc
        assert sc.get("scrape_interval", "5s") == "5s", sc
        jobs[sc["job_name"]] = [t for st in sc["static_configs"] for t in st["targets"]]
    assert set(jobs) == set(JOBS), jobs
    for job, (ini_file, section) in JOBS.items():
        ini = configparser.ConfigParser(interpolation=None, strict=False)
        ini.read(os.path.join(fgtest.SOURCE_DIR, "config", ini_file))
        want = ini[section]["admin_listen"]
        assert jobs[job] == [want], (job, jobs[job], want)
        assert want.startswith("127.0.0.1:"), want


def test_rules_cover_the_operator_questions():
    """rules.yml parses; its records read the series an operator asks about
    (accepted rate, 5xx and 4xx by route, p50 and p99 produce latency, queue
    depth, producer restarts, lock lag of every daemon, scorer results,
    batches, dead letters, decisions, leader, policy feed lag, readiness and
    invalid records, control API by route, stream clients, events and slow
    drops, Redis up and errors by operation, history memory)."""
    records = load_rules()
    read = {}
    for record, expr in records.items():
        selectors, grouping = parse_promql(expr)
        for name, matchers in selectors:
            read.setdefault(name, []).append((record, expr, matchers, grouping))

    def has(name, check=lambda expr, matchers, grouping: True, what=""):
        assert any(check(e, m, g) for _, e, m, g in read.get(name, [])), \
            f"no recording rule reads {name} {what}"

    has("fleetgate_checkins_accepted_total", lambda e, m, g: "rate(" in e, "as a rate")
    for cls in ("5", "4"):
        has("fleetgate_http_requests_total",
            lambda e, m, g: ("code", "=~", f"{cls}..") in m and "route" in g,
            f"as {cls}xx by route")
    for q in ("0.5", "0.99"):
        has("fleetgate_produce_latency_seconds_bucket",
            lambda e, m, g: f"histogram_quantile({q}," in e.replace(" ", ""),
            f"as quantile {q}")
    has("fleetgate_producer_queue_depth")
    has("fleetgate_lock_table_lag_records")
    has("fleetgate_scorer_checkins_total", lambda e, m, g: "result" in g, "by result")
    for name in ("fleetgate_scorer_batches_total", "fleetgate_scorer_dead_letters_total",
                 "fleetgate_scorer_decisions_total"):
        has(name, lambda e, m, g: "rate(" in e, "as a rate")
    has("fleetgate_scorer_leader")
    has("fleetgate_producer_restarts_total", lambda e, m, g: "increase(" in e, "as an increase")
    has("fleetgate_lock_table_lag_records",
        lambda e, m, g: ("job", "=~", "gateway|scorer|control") in m, "for every daemon")
    has("fleetgate_policy_table_lag_records")
    has("fleetgate_policy_table_ready")
    has("fleetgate_policy_records_invalid_total", lambda e, m, g: "rate(" in e, "as a rate")
    has("fleetgate_control_requests_total",
        lambda e, m, g: {"route", "code"} <= g, "by route and code")
    has("fleetgate_control_stream_clients")
    for name in ("fleetgate_control_stream_events_total",
                 "fleetgate_control_stream_slow_dropped_total",
                 "fleetgate_control_dashboard_lost_total"):
        has(name, lambda e, m, g: "rate(" in e, "as a rate")
    has("fleetgate_control_redis_up")
    has("fleetgate_control_redis_errors_total", lambda e, m, g: "op" in g, "by op")
    has("fleetgate_control_history_bytes")
    has("fleetgate_control_history_refused")


def test_alerts_watch_restarts_feeds_streams_and_redis():
    """Every alert is well formed (see load_alerts), reads series the
    daemons export or recording rules of rules.yml, and together they watch
    producer restarts, the policy feed (ready, lag, invalid records), the
    control service's Redis (up, errors), slow stream clients, lost
    dashboard events and refused history."""
    alerts = load_alerts()
    records = load_rules()
    exports = exported()
    jobs = {sc["job_name"] for sc in load_yaml(PROM_YML)["scrape_configs"]}
    problems = [f"{name}: {msg}" for name, rule in alerts.items()
                for msg in problems_of(rule["expr"], exports, records, jobs)]
    assert not problems, "\n".join(problems)

    def reads(expr):
        """The series names expr reads, through the records it reads."""
        out = set()
        for sel, _ in parse_promql(expr)[0]:
            out.update(s for s, _ in parse_promql(records.get(sel, sel))[0])
        return out

    watched = set()
    for rule in alerts.values():
        watched |= reads(rule["expr"])
    for name in ("fleetgate_producer_restarts_total", "fleetgate_policy_table_ready",
                 "fleetgate_policy_table_lag_records",
                 "fleetgate_policy_records_invalid_total", "fleetgate_control_redis_up",
                 "fleetgate_control_redis_errors_total",
                 "fleetgate_control_stream_slow_dropped_total",
                 "fleetgate_control_dashboard_lost_total",
                 "fleetgate_control_history_refused"):
        assert name in watched, f"no alert watches {name}"


def test_dashboard_parses_with_unique_ids_and_queries():
    """The dashboard parses; schemaVersion 39; rows Gateway, Scorer, Locks,
    Control;
    panel ids unique; no two panels overlap; every data panel has the
    ${DS_PROMETHEUS} datasource and only non-empty queries."""
    dash = load_dashboard()
    assert dash.get("schemaVersion") == 39, dash.get("schemaVersion")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables.get("DS_PROMETHEUS", {}).get("type") == "datasource", variables
    assert variables["DS_PROMETHEUS"].get("query") == "prometheus", variables
    panels = all_panels(dash)
    rows = [p["title"] for p in panels if p.get("type") == "row"]
    assert rows == ["Gateway", "Scorer", "Locks", "Control"], rows
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (p["title"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, \
                    f"panels {cells[(x, y)]!r} and {p['title']!r} overlap at {(x, y)}"
                cells[(x, y)] = p["title"]
    data = [p for p in panels if p.get("type") != "row"]
    assert data, "no data panels"
    for p in data:
        title = p.get("title")
        assert title, p
        assert p.get("datasource", {}).get("uid") == DS_UID, (title, p.get("datasource"))
        assert p.get("targets"), f"{title}: no queries"
        for t in p["targets"]:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), (title, t)
            ds = t.get("datasource")
            assert ds is None or ds.get("uid") == DS_UID, (title, ds)


def test_checker_reports_wrong_names_labels_and_jobs():
    """The check below can fail: a misspelt metric, a label value no series
    has, a grouping label that does not exist, a missing or unscraped job
    are all reported, against the real gateway's metrics."""
    exports = exported()
    jobs = set(JOBS)
    good = 'sum by (route) (rate(fleetgate_http_requests_total{job="gateway",code="200"}[1m]))'
    assert problems_of(good, exports, {}, jobs) == []
    bad = [
        'rate(fleetgate_http_request_total{job="gateway"}[1m])',
        'rate(fleetgate_http_requests_total{job="gateway",code="299"}[1m])',
        'sum by (rout) (rate(fleetgate_http_requests_total{job="gateway"}[1m]))',
        'rate(fleetgate_http_requests_total[1m])',
        'rate(fleetgate_http_requests_total{job="gatway"}[1m])',
        'rate(fleetgate_scorer_batches_total{job="scorer",result=~"applied|lost"}[1m]) * 0'
        ' + fleetgate_scorer_leader{job="gateway"}',
        'up{job="control"} + fleetgate_scorer_leader{job="control"}',
        'sum(rate(fleetgate_http_requests_total{job="gateway"}[1m])',
    ]
    for expr in bad:
        assert problems_of(expr, exports, {}, jobs), f"no problem found in {expr}"


def test_rules_read_only_exported_series():
    """Every series rules.yml reads is exported by the job it selects, with
    the label values it matches and the labels it groups by."""
    exports = exported()
    records = load_rules()
    jobs = {sc["job_name"] for sc in load_yaml(PROM_YML)["scrape_configs"]}
    problems = [f"{record}: {msg}" for record, expr in records.items()
                for msg in problems_of(expr, exports, {}, jobs)]
    assert not problems, "\n".join(problems)


def test_dashboard_reads_only_exported_series():
    """Every series a dashboard panel reads is exported by the gateway, the
    scorer or the control service it selects (or is a recording rule of
    rules.yml)."""
    exports = exported()
    records = load_rules()
    jobs = {sc["job_name"] for sc in load_yaml(PROM_YML)["scrape_configs"]}
    problems = []
    for title, expr in dashboard_exprs(load_dashboard()):
        problems += [f"{title}: {msg}" for msg in problems_of(expr, exports, records, jobs)]
    assert not problems, "\n".join(problems)


def test_dashboard_shows_restarts_feeds_streams_and_redis():
    """Panels show producer restarts, the policy feed (lag, invalid
    records, readiness), the control service's stream clients and slow
    drops, its Redis (up, errors) and history memory."""
    read = set()
    for _, expr in dashboard_exprs(load_dashboard()):
        read.update(name for name, _ in parse_promql(expr)[0])
    for name in ("fleetgate_producer_restarts_total", "fleetgate_policy_table_lag_records",
                 "fleetgate_policy_records_invalid_total", "fleetgate_policy_table_ready",
                 "fleetgate_control_stream_clients",
                 "fleetgate_control_stream_slow_dropped_total",
                 "fleetgate_control_redis_up", "fleetgate_control_redis_errors_total",
                 "fleetgate_control_history_bytes"):
        assert name in read, f"no panel reads {name}"


if __name__ == "__main__":
    fgtest.run()
