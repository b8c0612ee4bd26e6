#!/usr/bin/env bash
# shellcheck disable=SC2317 # the check functions are only called through `check`
# Checks observability/ with the real tools: Prometheus config, rules and rule unit tests
# (promtool), Alertmanager config, routing and templates (amtool), and checks.py for
# what the tools cannot see (file syntax, dashboards, metric names, runbooks, wiring).
# One line per check; exits non-zero if any check fails. Installs nothing: it needs
#   apt-get install -y --no-install-recommends prometheus prometheus-alertmanager python3-yaml
# (promtool, amtool, PyYAML). The rabbitmq_* name check uses the live RabbitMQ plugin on
# 127.0.0.1:15692 when it answers, and says so when it does not.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
cd "$HERE"

failed=0
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# check NAME CMD...: runs CMD, prints "ok NAME" or "FAIL NAME" followed by its output.
# checks.py exits 2 for "skipped", which is reported but is not a failure.
check() {
  local name="$1" rc=0
  shift
  "$@" >"$out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "ok    $name"
    grep '^note: ' "$out" | sed 's/^/      /' || true
  elif [[ $rc -eq 2 ]]; then
    echo "skip  $name: $(head -1 "$out")"
  else
    echo "FAIL  $name"
    sed 's/^/      /' "$out"
    failed=1
  fi
}

need() {
  if ! command -v "$1" >/dev/null; then
    echo "FAIL  $1 is not installed ($2)"
    exit 1
  fi
}
need promtool "apt-get install prometheus"
need amtool "apt-get install prometheus-alertmanager"
need python3 "apt-get install python3"
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "FAIL  PyYAML is not installed (apt-get install python3-yaml)"
  exit 1
fi

# --- Prometheus -----------------------------------------------------------------------
# check config also loads the rule files the config names.
check "promtool check config prometheus.yml" promtool check config prometheus/prometheus.yml
check "promtool check config prometheus.compose.yml" promtool check config prometheus/prometheus.compose.yml
check "prometheus.compose.yml = prometheus.yml with compose hostnames" python3 checks.py prometheus-compose
check "promtool check rules" promtool check rules prometheus/rules/*.yml
check "promtool test rules" promtool test rules prometheus/tests/*.yml
check "every alert: severity, annotations, runbook section, firing and quiet tests" python3 checks.py alerts

# --- Alertmanager ---------------------------------------------------------------------
# The *_file / credentials_file paths are only referenced, not opened, by check-config.
check "amtool check-config" amtool check-config alertmanager/alertmanager.yml

# Each line below: the receiver that an alert with these labels must reach.
routes() {
  local cfg=alertmanager/alertmanager.yml
  while read -r receiver labels; do
    # shellcheck disable=SC2086 # labels are separate words on purpose
    amtool config routes test --config.file="$cfg" --verify.receivers="$receiver" $labels \
      >/dev/null 2>&1 || { echo "$labels should route to $receiver, goes to $(
        # shellcheck disable=SC2086
        amtool config routes test --config.file="$cfg" $labels 2>/dev/null)"; return 1; }
  done <<'EOF'
page-app        alertname=ServiceDown severity=page service=catalog
page-platform   alertname=ServiceDown severity=page service=rabbitmq
page-platform   alertname=HostDiskFilling severity=page instance=node1:9100
ticket-app      alertname=DeadLettersPresent severity=ticket service=social
ticket-platform alertname=ExporterDown severity=ticket service=postgres
ticket-platform alertname=HostDiskFilling severity=ticket mountpoint=/
slack-info      alertname=Anything severity=info service=gateway
slack-info      alertname=NoSeverity service=gateway
EOF
}
check "amtool config routes test (severity x service)" routes

render() {
  local data
  data="$(mktemp)"
  cat >"$data" <<'EOF'
{"receiver": "page-app", "status": "firing",
 "alerts": [{"status": "firing",
   "labels": {"alertname": "ServiceDown", "service": "catalog", "severity": "page"},
   "annotations": {"summary": "catalog is down", "description": "scrape failed",
     "runbook_url": "https://github.com/switchyard/switchyard/blob/main/observability/runbooks.md#servicedown"},
   "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}],
 "groupLabels": {"alertname": "ServiceDown", "service": "catalog"},
 "commonLabels": {"alertname": "ServiceDown", "service": "catalog", "severity": "page"},
 "commonAnnotations": {}, "externalURL": "http://alertmanager:9093"}
EOF
  local text
  text="$(amtool template render --template.glob='alertmanager/templates/*.tmpl' \
    --template.data="$data" \
    --template.text='{{ template "switchyard.title" . }}|{{ template "switchyard.text" . }}')"
  rm -f "$data"
  if ! grep -q '^\[FIRING:1\] ServiceDown · catalog (page)|' <<<"$text" ||
    ! grep -q 'runbooks.md#servicedown' <<<"$text"; then
    echo "$text"
    return 1
  fi
}
check "amtool template render (title, text, runbook link)" render

# --- Files, dashboards, names, wiring ------------------------------------------------
check "JSON/NDJSON/YAML/INI syntax under grafana/ logging/ prometheus/ alertmanager/" python3 checks.py files
check "dashboards: structure, prometheus datasource, no variables, PromQL parses" python3 checks.py dashboards
check "metric names: switchyard_* in metrics.txt, rabbitmq_*/node_/pg_ live" python3 checks.py metrics
check "wiring: datasource uids, log fields mapped, saved objects resolve, ILM/SLM/archive" python3 checks.py wiring
check "bash -n logging/setup.sh" bash -n logging/setup.sh
if command -v shellcheck >/dev/null; then
  check "shellcheck check.sh logging/setup.sh panel-test.sh" shellcheck check.sh logging/setup.sh panel-test.sh
else
  echo "skip  shellcheck: not installed"
fi

exit "$failed"
