#!/usr/bin/env bash
# The compose stack's RabbitMQ: starts the server and, once it answers, makes sure the
# admin and every Switchyard service have their own user — passwords from the secret
# files, permissions from permissions.tsv — and that `guest` is gone. Then it marks the
# broker ready for the healthcheck (ready.sh) and waits on the server, passing SIGTERM on.
# Idempotent: passwords and permissions are set again on every start.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
SECRETS=${SECRETS:-/run/secrets}
READY=${RABBITMQ_READY_FILE:-/var/lib/rabbitmq/switchyard.ready}
rm -f "$READY"

rabbitmq-server &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit $?' TERM INT

until rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || { echo "start.sh: rabbitmq-server exited" >&2; exit 1; }
  sleep 1
done

user() { # user NAME PASSWORD_FILE: creates NAME or sets its password
  local password
  password=$(tr -d '\n' <"$2")
  if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$1"; then
    rabbitmqctl -q change_password "$1" "$password" >/dev/null
  else
    rabbitmqctl -q add_user "$1" "$password" >/dev/null
  fi
}

user admin "$SECRETS/rabbitmq_admin_password"
rabbitmqctl -q set_user_tags admin administrator >/dev/null
rabbitmqctl -q set_permissions -p / admin '.*' '.*' '.*' >/dev/null
# The table is read on fd 3: rabbitmqctl reads standard input and would swallow it.
while IFS=$'\t' read -r -u 3 service configure write read; do
  [[ -z $service || $service == \#* ]] && continue
  user "switchyard-$service" "$SECRETS/rabbitmq_${service}_password"
  rabbitmqctl -q set_permissions -p / "switchyard-$service" "$configure" "$write" "$read" >/dev/null
done 3<"$HERE/permissions.tsv"
rabbitmqctl -q delete_user guest >/dev/null 2>&1 || true
echo "start.sh: users and permissions in place"
touch "$READY"
wait "$server"
