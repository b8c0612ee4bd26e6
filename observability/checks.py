#!/usr/bin/env python3
"""Static checks of observability/ that the real tools do not do; run by check.sh.

    python3 checks.py <check>    (files | dashboards | metrics | alerts | prometheus-compose | wiring)

Each check prints nothing and exits 0 when it passes, or prints the problems and exits 1
(2 when a check was skipped, with the reason). check.sh prints the one-line verdicts.
Needs PyYAML (Debian: python3-yaml) and, for `dashboards`, promtool on PATH.
"""
import configparser
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
RUNBOOK_BASE = "https://github.com/switchyard/switchyard/blob/main/observability/runbooks.md#"
SEVERITIES = {"page", "ticket", "info"}
PROM_DS = {"type": "prometheus", "uid": "prometheus"}
# Dashboards may use no template variable but this one; the live panel test substitutes it.
ALLOWED_VARS = {"$__rate_interval"}
RATE_INTERVAL_FOR_TESTS = "5m"
# Live endpoints whose metric names the dashboards and rules may use, by name prefix.
# mongodb_* is not checked: the panels deliberately accept either exporter generation.
LIVE = {
    "rabbitmq_": ["http://127.0.0.1:15692/metrics", "http://127.0.0.1:15692/metrics/per-object"],
    "node_": ["http://127.0.0.1:9100/metrics"],
    "pg_": ["http://127.0.0.1:9187/metrics"],
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def path(*parts):
    return os.path.join(HERE, *parts)


def rel(p):
    return os.path.relpath(p, HERE)


def files_under(*dirs):
    out = []
    for d in dirs:
        for root, _, names in os.walk(path(d)):
            out += [os.path.join(root, n) for n in sorted(names)]
    return sorted(out)


def dashboards():
    return {rel(p): json.load(open(p)) for p in sorted(glob.glob(path("grafana/dashboards/*.json")))}


def panel_exprs():
    for name, board in dashboards().items():
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                yield name, panel.get("title", "?"), target.get("expr", "")


def rule_files():
    return sorted(glob.glob(path("prometheus/rules/*.yml")))


def rules():
    for p in rule_files():
        for group in yaml.safe_load(open(p))["groups"]:
            for rule in group["rules"]:
                yield rel(p), rule


def rules_with_group_context():
    """(file, rule, names recorded earlier in the same group) for every rule."""
    for p in rule_files():
        for group in yaml.safe_load(open(p))["groups"]:
            recorded = set()
            for rule in group["rules"]:
                yield rel(p), rule, set(recorded)
                if "record" in rule:
                    recorded.add(rule["record"])


def test_docs():
    return {rel(p): yaml.safe_load(open(p)) for p in sorted(glob.glob(path("prometheus/tests/*.yml")))}


def strip_strings(expr):
    """PromQL without its string literals (label values, regexes), so that tokens are names."""
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def metric_names(expr, prefix):
    """Names starting with `prefix` used in a PromQL expression (recorded names with ':' excluded)."""
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", strip_strings(expr))
    return {t for t in tokens if t.startswith(prefix) and ":" not in t}


def fail(problems):
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


# ---------------------------------------------------------------------------- checks

def check_files():
    """Every configuration file under grafana/, logging/ (and the other config dirs) parses."""
    problems = []
    for p in files_under("grafana", "logging", "prometheus", "alertmanager"):
        name = rel(p)
        try:
            if p.endswith(".json"):
                json.load(open(p))
            elif p.endswith(".ndjson"):
                for i, line in enumerate(open(p), 1):
                    if line.strip():
                        obj = json.loads(line)
                        if not {"id", "type", "attributes"} <= obj.keys():
                            problems.append(f"{name}:{i}: saved object without id/type/attributes")
            elif p.endswith((".yml", ".yaml")):
                list(yaml.safe_load_all(open(p)))
            elif p.endswith(".ini"):
                parser = configparser.ConfigParser(interpolation=None, strict=True)
                parser.read_string(open(p).read())
            elif p.endswith(".conf"):
                problems += [f"{name}: {e}" for e in logstash_balance(open(p).read())]
            elif p.endswith((".md", ".sh", ".tmpl")):
                continue
            else:
                problems.append(f"{name}: unknown file type (add a validator to checks.py)")
        except Exception as e:  # noqa: BLE001 - report any parse error with the file name
            problems.append(f"{name}: {e}")
    fail(problems)


def logstash_balance(text):
    """Logstash has no offline parser here: check comments aside, quotes close and brackets nest."""
    stack, problems, quote = [], [], None
    pairs = {"}": "{", "]": "[", ")": "("}
    for lineno, line in enumerate(text.splitlines(), 1):
        i = 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c == "#":
                break
            elif c in "\"'":
                quote = c
            elif c in "{[(":
                stack.append((c, lineno))
            elif c in "}])":
                if not stack or stack[-1][0] != pairs[c]:
                    problems.append(f"line {lineno}: unexpected {c}")
                else:
                    stack.pop()
            i += 1
        if quote:
            problems.append(f"line {lineno}: unterminated string")
            quote = None
    problems += [f"line {n}: unclosed {c}" for c, n in stack]
    return problems


def check_dashboards():
    """Dashboard structure, datasource, variables, and that every expr parses as PromQL."""
    problems, exprs, uids = [], [], {}
    for name, board in dashboards().items():
        uid = board.get("uid")
        if not uid or uid in uids:
            problems.append(f"{name}: missing or duplicate uid {uid!r}")
        uids[uid] = name
        if not 36 <= board.get("schemaVersion", 0) <= 41:
            problems.append(f"{name}: schemaVersion {board.get('schemaVersion')} (want ~39)")
        if board.get("templating", {}).get("list"):
            problems.append(f"{name}: template variables are not allowed (panels must evaluate as-is)")
        ids = [p.get("id") for p in board.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"{name}: duplicate panel ids")
        for panel in board.get("panels", []):
            where = f"{name} / {panel.get('title', '?')}"
            if panel.get("datasource") != PROM_DS:
                problems.append(f"{where}: datasource must be {PROM_DS}")
            if not panel.get("targets"):
                problems.append(f"{where}: no targets")
            for target in panel.get("targets", []):
                expr = target.get("expr", "").strip()
                if not expr:
                    problems.append(f"{where}: target {target.get('refId')} has no expr")
                    continue
                if target.get("datasource", PROM_DS) != PROM_DS:
                    problems.append(f"{where}: target datasource must be {PROM_DS}")
                for var in set(re.findall(r"\$\{?[A-Za-z_]\w*", expr)):
                    if var.replace("{", "") not in ALLOWED_VARS:
                        problems.append(f"{where}: variable {var} (only $__rate_interval)")
                exprs.append((where, expr.replace("$__rate_interval", RATE_INTERVAL_FOR_TESTS)))
    # promtool parses PromQL: present every expr as a recording rule and let it judge.
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
        yaml.safe_dump({"groups": [{"name": "dashboard-exprs", "rules": [
            {"record": f"dashboard_expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}, tmp)
    try:
        out = subprocess.run(["promtool", "check", "rules", tmp.name], capture_output=True, text=True)
        if out.returncode != 0:
            for line in (out.stdout + out.stderr).splitlines():
                m = re.search(r"dashboard_expr_(\d+)", line)
                if m:
                    line += f"  <- {exprs[int(m.group(1))][0]}"
                if line.strip():
                    problems.append("promtool: " + line.strip())
    finally:
        os.unlink(tmp.name)
    fail(problems)


def known_switchyard_metrics():
    names = set()
    for line in open(path("metrics.txt")):
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
            if not line.endswith("_total"):
                names.update(line + s for s in HISTOGRAM_SUFFIXES)
    return names


def used_exprs():
    """(where, PromQL) for every query in dashboards, rules, rule tests and datasource links."""
    for name, title, expr in panel_exprs():
        yield f"{name} / {title}", expr
    for name, rule in rules():
        yield f"{name} / {rule.get('alert') or rule.get('record')}", rule["expr"]
    for name, doc in test_docs().items():
        for test in doc.get("tests", []):
            for series in test.get("input_series", []):
                yield f"{name} / {test.get('name')}", series["series"]
            for t in test.get("promql_expr_test", []):
                yield f"{name} / {test.get('name')}", t["expr"]
    ds = yaml.safe_load(open(path("grafana/provisioning/datasources/datasources.yml")))
    for d in ds["datasources"]:
        for q in d.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            yield f"datasources.yml / {d['name']} / {q['name']}", q["query"].replace("$$", "$")


def live_names(urls):
    names = set()
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


def check_metrics():
    """switchyard_* names are in metrics.txt; rabbitmq_* (node_, pg_) names exist live."""
    problems, skipped = [], []
    known = known_switchyard_metrics()
    exprs = list(used_exprs())
    for where, expr in exprs:
        for n in sorted(metric_names(expr, "switchyard_") - known):
            problems.append(f"{where}: {n} is not in metrics.txt")
        for n in sorted(metric_names(expr, "container_") - CADVISOR_METRICS):
            problems.append(f"{where}: {n} is not one of cAdvisor's metrics (CADVISOR_METRICS)")
    for prefix, urls in LIVE.items():
        used = {(w, n) for w, e in exprs for n in metric_names(e, prefix)}
        if not used:
            continue
        try:
            live = live_names(urls)
        except OSError as e:
            skipped.append(f"{prefix}* names not checked: {urls[0]} unreachable ({e.__class__.__name__})")
            continue
        for where, n in sorted(used):
            if n not in live:
                problems.append(f"{where}: {n} is not exported by {urls[0]}")
    for s in skipped:
        print("note: " + s)
    fail(problems)


def check_alerts():
    """Labels and annotations of every alert, its runbook section, and its tests."""
    problems = []
    runbook = open(path("runbooks.md")).read()
    sections = {h.strip() for h in re.findall(r"^## (.+)$", runbook, re.M)}
    alerts = {}
    for name, rule, recorded_before in rules_with_group_context():
        if "record" in rule:
            continue
        a = rule["alert"]
        alerts.setdefault(a, []).append(rule)
        sev = rule.get("labels", {}).get("severity")
        if sev not in SEVERITIES:
            problems.append(f"{a}: severity {sev!r} not in {sorted(SEVERITIES)}")
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{a}: no {key} annotation")
        if ann.get("runbook_url") != RUNBOOK_BASE + a.lower():
            problems.append(f"{a}: runbook_url should be {RUNBOOK_BASE + a.lower()}")
        if a not in sections:
            problems.append(f"{a}: no '## {a}' section in runbooks.md")
        # Groups are evaluated independently (and in random order by promtool): an alert
        # must read recordings made earlier in its own group, or it sees stale values.
        for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z0-9_]+)+", strip_strings(rule["expr"])):
            if token not in recorded_before:
                problems.append(f"{a}: uses {token}, not recorded earlier in its own group")
    firing, quiet = set(), set()
    for doc in test_docs().values():
        for test in doc.get("tests", []):
            for t in test.get("alert_rule_test", []):
                (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    for a in sorted(alerts):
        if a not in firing:
            problems.append(f"{a}: no test where it fires")
        if a not in quiet:
            problems.append(f"{a}: no test where it stays quiet")
    for s in sorted(sections - set(alerts)):
        problems.append(f"runbooks.md: section '{s}' has no alert")
    fail(problems)


# The compose variant is the local file with these address substitutions, nothing else.
COMPOSE_HOSTS = {
    "127.0.0.1:8080": "gateway:8080", "127.0.0.1:9101": "catalog:9101",
    "127.0.0.1:9102": "accounts:9102", "127.0.0.1:9103": "social:9103",
    "127.0.0.1:15692": "rabbitmq:15692", "127.0.0.1:9187": "postgres-exporter:9187",
    "127.0.0.1:9216": "mongodb-exporter:9216", "127.0.0.1:9100": "node-exporter:9100",
    "127.0.0.1:9093": "alertmanager:9093",
}


# Scrape jobs only the compose stack has, with the reason.
COMPOSE_ONLY_JOBS = {
    "cadvisor": "containers exist only under compose; ./dev runs processes",
}
# cAdvisor's metric names the Containers dashboard may use (cAdvisor's
# docs/storage/prometheus.md). cAdvisor cannot run here, so they are checked against this
# list rather than against a live endpoint, and the panel test allows them to be empty.
CADVISOR_METRICS = {
    "container_cpu_usage_seconds_total", "container_cpu_cfs_throttled_seconds_total",
    "container_memory_working_set_bytes", "container_spec_memory_limit_bytes",
    "container_network_receive_bytes_total", "container_network_transmit_bytes_total",
}


def check_prometheus_compose():
    """prometheus.compose.yml == prometheus.yml with compose hostnames (+ compose-only jobs)."""
    local = open(path("prometheus/prometheus.yml")).read()
    for a, b in COMPOSE_HOSTS.items():
        local = local.replace(f'"{a}"', f'"{b}"')
    want = yaml.safe_load(local)
    got = yaml.safe_load(open(path("prometheus/prometheus.compose.yml")))
    got["scrape_configs"] = [j for j in got["scrape_configs"] if j["job_name"] not in COMPOSE_ONLY_JOBS]
    if want != got:
        fail(["prometheus.compose.yml differs from prometheus.yml beyond the target addresses:",
              json.dumps(want, sort_keys=True)[:300], json.dumps(got, sort_keys=True)[:300]])
    leftovers = [line for line in open(path("prometheus/prometheus.compose.yml"))
                 if "127.0.0.1" in line and not line.lstrip().startswith("#")]
    fail([f"prometheus.compose.yml still names 127.0.0.1: {l.strip()}" for l in leftovers])


def check_wiring():
    """Datasource uids, log fields and saved-object references point at things that exist."""
    problems = []
    ds = yaml.safe_load(open(path("grafana/provisioning/datasources/datasources.yml")))["datasources"]
    uids = {d["uid"]: d for d in ds}
    for want in ("prometheus", "jaeger", "elasticsearch"):
        if want not in uids:
            problems.append(f"datasources.yml: no datasource with uid {want}")
    jaeger = uids.get("jaeger", {}).get("jsonData", {})
    for key in ("tracesToLogsV2", "tracesToMetrics"):
        ref = jaeger.get(key, {}).get("datasourceUid")
        if ref not in uids:
            problems.append(f"datasources.yml: jaeger {key} points at unknown uid {ref!r}")
    if "trace_id" not in jaeger.get("tracesToLogsV2", {}).get("query", ""):
        problems.append("datasources.yml: traces-to-logs does not filter by trace_id")

    template = json.load(open(path("logging/elasticsearch/index-template.json")))
    props = template["template"]["mappings"]["properties"]

    def mapped(field):
        node = {"properties": props}
        for part in field.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                return None
        return node

    # The log schema of issue 5: ids are exact-match keywords.
    for field in ("@timestamp", "level", "service", "version", "message", "trace_id", "span_id",
                  "request_id", "operation_id", "latency_ms"):
        if mapped(field) is None:
            problems.append(f"index-template.json: {field} is not mapped")
    for field in ("level", "service", "version", "trace_id", "span_id", "request_id", "operation_id"):
        if (mapped(field) or {}).get("type") != "keyword":
            problems.append(f"index-template.json: {field} should be a keyword")
    ilm_name = template["template"]["settings"].get("index.lifecycle.name")
    if ilm_name != "switchyard-logs":
        problems.append(f"index-template.json: lifecycle {ilm_name!r} is not switchyard-logs")
    ilm = json.load(open(path("logging/elasticsearch/ilm-policy.json")))["policy"]["phases"]
    slm = json.load(open(path("logging/elasticsearch/slm-policy.json")))
    if slm.get("repository") != "archive":
        problems.append("slm-policy.json: repository is not `archive`")
    wait = ilm.get("delete", {}).get("actions", {}).get("wait_for_snapshot", {}).get("policy")
    if wait != "switchyard-logs-nightly":
        problems.append("ilm-policy.json: delete does not wait for the switchyard-logs-nightly snapshot")
    setup = open(path("logging/setup.sh")).read()
    for needle in ("/_slm/policy/switchyard-logs-nightly", "/_ilm/policy/switchyard-logs",
                   "/_snapshot/archive", "/_index_template/switchyard-logs"):
        if needle not in setup:
            problems.append(f"setup.sh does not install {needle}")

    # Kibana saved objects: references resolve, and every field they use is mapped.
    objs = [json.loads(l) for l in open(path("logging/kibana/saved-objects.ndjson")) if l.strip()]
    ids = {(o["type"], o["id"]) for o in objs}
    for o in objs:
        for r in o.get("references", []):
            if (r["type"], r["id"]) not in ids:
                problems.append(f"saved-objects: {o['id']} references missing {r['type']} {r['id']}")
        attrs = o["attributes"]
        fields = set(attrs.get("columns", []))
        source = json.loads(attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", "{}"))
        query = source.get("query", {}).get("query", "")
        fields |= set(re.findall(r"([A-Za-z_@][\w.@]*)\s*:", query))
        if "visState" in attrs:
            for agg in json.loads(attrs["visState"]).get("aggs", []):
                if agg.get("params", {}).get("field"):
                    fields.add(agg["params"]["field"])
        for f in sorted(fields):
            if mapped(f) is None:
                problems.append(f"saved-objects: {o['id']} uses unmapped field {f}")
    pattern = [o for o in objs if o["type"] == "index-pattern"]
    if [p["attributes"]["title"] for p in pattern] != ["switchyard-logs-*"]:
        problems.append("saved-objects: want exactly one index pattern, switchyard-logs-*")
    fail(problems)


CHECKS = {
    "files": check_files,
    "dashboards": check_dashboards,
    "metrics": check_metrics,
    "alerts": check_alerts,
    "prometheus-compose": check_prometheus_compose,
    "wiring": check_wiring,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(CHECKS)}}}")
    CHECKS[sys.argv[1]]()
