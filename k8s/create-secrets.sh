#!/usr/bin/env bash
# Creates the Secrets the manifests reference, with random values, in one namespace:
#   k8s/create-secrets.sh NAMESPACE [--tls-cert FILE --tls-key FILE]
# Idempotent: a Secret that exists is left alone, and values that must agree (a broker
# user's password and the URL a service connects with) are read back from the Secret
# that holds them. Nothing is written to disk. Needs kubectl (with access to the
# namespace), openssl, base64. The list and what each holds: k8s/README.md, "Secrets".
set -euo pipefail

usage() { echo "usage: $0 NAMESPACE [--tls-cert FILE --tls-key FILE]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
NS="$1"
shift
TLS_CERT="" TLS_KEY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tls-cert) TLS_CERT="$2"; shift 2 ;;
    --tls-key) TLS_KEY="$2"; shift 2 ;;
    *) usage ;;
  esac
done

k() { kubectl --namespace "$NS" "$@"; }
exists() { k get secret "$1" >/dev/null 2>&1; }
hex() { openssl rand -hex "$1"; }
# get NAME KEY: a value of an existing Secret.
get() { k get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }
# make NAME [--type TYPE] KEY=VALUE...: creates the Secret unless it exists.
make() {
  local name="$1" type=generic args=()
  shift
  if [[ ${1:-} == --type ]]; then type="$2"; shift 2; fi
  if exists "$name"; then
    echo "kept    $name"
    return
  fi
  for kv in "$@"; do args+=(--from-literal="$kv"); done
  if [[ $type == generic ]]; then
    k create secret generic "$name" "${args[@]}" >/dev/null
  else
    k create secret generic "$name" --type="$type" "${args[@]}" >/dev/null
  fi
  echo "created $name"
}
# password NAME: the password in Secret NAME, or a new one when NAME does not exist yet.
password() { if exists "$1"; then get "$1" password; else hex 24; fi; }

RABBITMQ="rabbitmq.$NS.svc"

# One key shared by every service: signs and verifies the actor of each command.
make switchyard-actor-key actor-key="$(hex 32)"

# Broker users (imported by the messaging-topology operator) and the URLs built on them.
declare -A amqp
for svc in gateway accounts catalog social keda; do
  pw="$(password "rabbitmq-user-$svc")"
  make "rabbitmq-user-$svc" username="switchyard-$svc" password="$pw"
  amqp[$svc]="amqp://switchyard-$svc:$pw@$RABBITMQ:5672/%2f"
done
make keda-rabbitmq host="http://switchyard-keda:$(get rabbitmq-user-keda password)@$RABBITMQ:15672/"

# PostgreSQL roles (CloudNativePG: basic-auth Secrets) and the services' URLs.
pg_accounts="$(password postgres-accounts)"
pg_social="$(password postgres-social)"
make postgres-accounts --type kubernetes.io/basic-auth username=accounts password="$pg_accounts"
make postgres-social --type kubernetes.io/basic-auth username=social password="$pg_social"

# MongoDB: root (first start of each member), the members' shared keyfile, catalog's user.
mongo_catalog="$(password mongo-catalog)"
make mongo-root username=root password="$(hex 24)"
make mongo-keyfile keyfile="$(openssl rand -base64 756 | tr -d '\n')"
make mongo-catalog username=catalog password="$mongo_catalog"
hosts="mongo-0.mongo.$NS.svc:27017,mongo-1.mongo.$NS.svc:27017,mongo-2.mongo.$NS.svc:27017"

make switchyard-gateway amqp-url="${amqp[gateway]}" operation-key="$(hex 32)"
make switchyard-accounts amqp-url="${amqp[accounts]}" key-encryption-key="$(hex 32)" \
  postgres-url="postgres://accounts:$pg_accounts@postgres-rw.$NS.svc:5432/accounts"
make switchyard-social amqp-url="${amqp[social]}" \
  postgres-url="postgres://social:$pg_social@postgres-rw.$NS.svc:5432/social"
make switchyard-catalog amqp-url="${amqp[catalog]}" \
  mongo-url="mongodb://catalog:$mongo_catalog@$hosts/catalog?replicaSet=rs0&authSource=catalog"

if [[ -n $TLS_CERT && -n $TLS_KEY ]]; then
  if exists gateway-tls; then echo "kept    gateway-tls"; else
    k create secret tls gateway-tls --cert="$TLS_CERT" --key="$TLS_KEY" >/dev/null
    echo "created gateway-tls"
  fi
elif ! exists gateway-tls; then
  echo "missing gateway-tls: pass --tls-cert/--tls-key, or let cert-manager issue it"
fi
