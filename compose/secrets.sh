#!/usr/bin/env bash
# Makes every secret the compose stack reads, as files in one directory (default
# compose/secrets/, never committed): random keys and passwords, the connection URLs built
# from them, and the Elasticsearch CA and node certificate. Existing files are kept, so a
# re-run adds only what is missing and never locks a running stack out.
# Usage: compose/secrets.sh [DIR]; AMQP_HOST/AMQP_PORT, PG_HOST/PG_PORT change the hosts in
# the URLs (defaults: the compose service names).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DIR=${1:-$HERE/secrets}
AMQP_HOST=${AMQP_HOST:-rabbitmq}
AMQP_PORT=${AMQP_PORT:-5672}
PG_HOST=${PG_HOST:-postgres}
PG_PORT=${PG_PORT:-5432}

for tool in openssl python3; do
  command -v "$tool" >/dev/null || { echo "secrets: error: $tool is needed" >&2; exit 1; }
done
mkdir -p "$DIR"
chmod 700 "$DIR"

# The containers run as their own users (10001, postgres, rabbitmq, grafana, ...), so the
# files are world-readable inside a directory only root can enter.
put() { # put NAME VALUE: writes the secret unless it exists
  [[ -s $DIR/$1 ]] && return 0
  (umask 022 && printf '%s\n' "$2" >"$DIR/$1.tmp" && mv "$DIR/$1.tmp" "$DIR/$1")
}
hex() { openssl rand -hex "$1"; }
value() { tr -d '\n' <"$DIR/$1"; }

put actor_key "$(hex 32)"
put operation_key "$(hex 32)"
put key_encryption_key "$(hex 32)"
put admin_password "$(hex 16)"
put rabbitmq_admin_password "$(hex 16)"
for service in gateway accounts social catalog; do
  put "rabbitmq_${service}_password" "$(hex 18)"
  put "amqp_${service}_url" \
    "amqp://switchyard-$service:$(value "rabbitmq_${service}_password")@$AMQP_HOST:$AMQP_PORT/%2f"
done
# RabbitMQ's definitions, loaded on every boot (rabbitmq.conf): the admin and one user per
# service with the permissions of rabbitmq/permissions.tsv (the table ./dev uses too), as
# salted SHA-256 password hashes. Made anew on every run, so a changed table or password
# takes effect at the next broker start.
python3 - "$DIR" "$HERE/rabbitmq/permissions.tsv" >"$DIR/rabbitmq_definitions.json.tmp" <<'PY'
import base64, hashlib, json, os, sys

secrets, table = sys.argv[1], sys.argv[2]

def password_hash(name):
    password = open(os.path.join(secrets, name)).read().rstrip("\n").encode()
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password).digest()).decode()

def user(name, secret, tags):
    return {"name": name, "password_hash": password_hash(secret),
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": tags}

users = [user("admin", "rabbitmq_admin_password", ["administrator"])]
permissions = [{"user": "admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
for line in open(table):
    if not line.strip() or line.startswith("#"):
        continue
    service, configure, write, read = line.rstrip("\n").split("\t")
    users.append(user(f"switchyard-{service}", f"rabbitmq_{service}_password", []))
    permissions.append({"user": f"switchyard-{service}", "vhost": "/",
                        "configure": configure, "write": write, "read": read})
json.dump({"users": users, "vhosts": [{"name": "/"}], "permissions": permissions}, sys.stdout, indent=2)
PY
chmod 644 "$DIR/rabbitmq_definitions.json.tmp"
mv "$DIR/rabbitmq_definitions.json.tmp" "$DIR/rabbitmq_definitions.json"

# The dlq tool is an operator's: it reads and moves every service's dead letters.
put amqp_dlq_url "amqp://admin:$(value rabbitmq_admin_password)@$AMQP_HOST:$AMQP_PORT/%2f"
put postgres_password "$(hex 18)"
for db in accounts social; do
  put "postgres_${db}_password" "$(hex 18)"
  put "postgres_${db}_url" \
    "postgres://$db:$(value "postgres_${db}_password")@$PG_HOST:$PG_PORT/$db"
done
# The exporter's view of PostgreSQL: the superuser, only from the compose network.
put postgres_exporter_url \
  "postgresql://postgres:$(value postgres_password)@$PG_HOST:$PG_PORT/postgres?sslmode=disable"
for name in grafana_admin_password grafana_secret_key grafana_es_password elastic_password \
  kibana_system_password logstash_writer_password kibana_encryption_key; do
  put "$name" "$(hex 24)"
done

# Elasticsearch's TLS: a CA for the stack and a certificate for the node es01 (the names
# the other services use to reach it).
if [[ ! -s $DIR/elasticsearch_ca.crt ]]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 1095 -subj "/CN=Switchyard logging CA" \
    -keyout "$DIR/elasticsearch_ca.key" -out "$DIR/elasticsearch_ca.crt" 2>/dev/null
  openssl req -newkey rsa:3072 -nodes -subj "/CN=es01" \
    -keyout "$DIR/elasticsearch_es01.key" -out "$DIR/elasticsearch_es01.csr" 2>/dev/null
  printf 'subjectAltName=DNS:es01,DNS:elasticsearch,DNS:localhost,IP:127.0.0.1\n' >"$DIR/san.ext"
  openssl x509 -req -in "$DIR/elasticsearch_es01.csr" -CA "$DIR/elasticsearch_ca.crt" \
    -CAkey "$DIR/elasticsearch_ca.key" -CAcreateserial -days 1095 -extfile "$DIR/san.ext" \
    -out "$DIR/elasticsearch_es01.crt" 2>/dev/null
  rm -f "$DIR/elasticsearch_es01.csr" "$DIR/san.ext" "$DIR/elasticsearch_ca.srl"
  # Elasticsearch runs as uid 1000 and reads the key; the CA key is needed by no container.
  chmod 644 "$DIR/elasticsearch_es01.key" "$DIR/elasticsearch_ca.crt" "$DIR/elasticsearch_es01.crt"
  chmod 600 "$DIR/elasticsearch_ca.key"
fi
echo "secrets: in $DIR"
