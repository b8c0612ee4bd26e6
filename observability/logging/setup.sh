#!/usr/bin/env bash
# One-shot setup of the logging stack, run by the compose `logging-setup` service once
# Elasticsearch answers (idempotent: every call is a PUT that overwrites):
#   built-in kibana_system password, roles and users (Logstash writer, Grafana reader),
#   the `archive` snapshot repository, the ILM and SLM policies, the index template,
#   and (when KIBANA_URL is set and Kibana answers) the Kibana saved objects.
# Passwords come from files (Docker secrets), never from arguments:
#   ELASTIC_PASSWORD_FILE, KIBANA_SYSTEM_PASSWORD_FILE, LOGSTASH_WRITER_PASSWORD_FILE,
#   GRAFANA_READER_PASSWORD_FILE; ES_CA (CA certificate) and ES_URL, KIBANA_URL optional.
# Needs only bash and curl (the Elasticsearch image has both).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ES_URL="${ES_URL:-https://elasticsearch:9200}"
KIBANA_URL="${KIBANA_URL:-}"
ES_CA="${ES_CA:-/certs/ca/ca.crt}"

secret() { # secret VAR_FILE: the content of the file named by $VAR_FILE, without newline
  local file="${!1:?$1 is not set}"
  tr -d '\n' <"$file"
}

ELASTIC_PASSWORD="$(secret ELASTIC_PASSWORD_FILE)"
# curl reads the credentials from a private config file (-K), so they never show in `ps`.
CURL_AUTH="$(mktemp)"
trap 'rm -f "$CURL_AUTH"' EXIT
chmod 600 "$CURL_AUTH"
printf 'user = "elastic:%s"\n' "$ELASTIC_PASSWORD" >"$CURL_AUTH"

es() { # es METHOD PATH [BODY_FILE|-]: fails on any HTTP error
  local method="$1" path="$2" body="${3:-}"
  local args=(--silent --show-error --fail-with-body --cacert "$ES_CA" -K "$CURL_AUTH"
    -X "$method" "$ES_URL$path" -H 'Content-Type: application/json')
  if [[ -n "$body" ]]; then args+=(--data-binary "@$body"); fi
  curl "${args[@]}"
  echo
}

json_string() { # json_string TEXT: TEXT as a JSON string (refuses control characters)
  local s=$1
  if [[ $s == *[[:cntrl:]]* ]]; then
    echo "setup.sh: a secret holds a control character" >&2
    return 1
  fi
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

json_password() { # json_password PASSWORD [ROLE]: {"password": "...", "roles": [...]} on stdout
  local password role
  password=$(json_string "$1") || return 1
  if (($# > 1)); then
    role=$(json_string "$2") || return 1
    printf '{"password": %s, "roles": [%s]}\n' "$password" "$role"
  else
    printf '{"password": %s}\n' "$password"
  fi
}

echo "waiting for Elasticsearch at $ES_URL"
for _ in $(seq 1 120); do
  if es GET '/_cluster/health?wait_for_status=yellow&timeout=5s' >/dev/null 2>&1; then break; fi
  sleep 2
done
es GET /_cluster/health >/dev/null

echo "built-in and service users"
json_password "$(secret KIBANA_SYSTEM_PASSWORD_FILE)" | es POST /_security/user/kibana_system/_password -
# One file per role under elasticsearch/roles/, named after the role.
for file in "$HERE"/elasticsearch/roles/*.json; do
  es PUT "/_security/role/$(basename "$file" .json)" "$file"
done
for user in logstash_writer:switchyard_logs_writer:LOGSTASH_WRITER_PASSWORD_FILE \
  grafana_reader:switchyard_logs_reader:GRAFANA_READER_PASSWORD_FILE; do
  IFS=: read -r name role var <<<"$user"
  json_password "$(secret "$var")" "$role" | es PUT "/_security/user/$name" -
done

echo "archive repository, lifecycle and snapshot policies, index template"
es PUT /_snapshot/archive "$HERE/elasticsearch/snapshot-repository.json"
es PUT /_ilm/policy/switchyard-logs "$HERE/elasticsearch/ilm-policy.json"
es PUT /_slm/policy/switchyard-logs-nightly "$HERE/elasticsearch/slm-policy.json"
es PUT /_index_template/switchyard-logs "$HERE/elasticsearch/index-template.json"

if [[ -n "$KIBANA_URL" ]]; then
  echo "Kibana saved objects"
  for _ in $(seq 1 60); do
    if curl --silent --fail -K "$CURL_AUTH" "$KIBANA_URL/api/status" >/dev/null; then break; fi
    sleep 5
  done
  curl --silent --show-error --fail-with-body -K "$CURL_AUTH" -H 'kbn-xsrf: true' \
    -X POST "$KIBANA_URL/api/saved_objects/_import?overwrite=true" \
    --form file=@"$HERE/kibana/saved-objects.ndjson"
  echo
fi
echo "logging setup done"
