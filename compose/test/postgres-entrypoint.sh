#!/usr/bin/env bash
# What the official postgres image's entrypoint does, as far as the compose stack uses it:
# on an empty data directory, initdb with the superuser password from
# POSTGRES_PASSWORD_FILE, run /docker-entrypoint-initdb.d/*.sh against a server listening
# on its socket only, then start the server (listening on POSTGRES_LISTEN, default all).
set -euo pipefail
if [[ ! -s $PGDATA/PG_VERSION ]]; then
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
  initdb -D "$PGDATA" -U postgres --pwfile="$POSTGRES_PASSWORD_FILE" ${POSTGRES_INITDB_ARGS:-}
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [[ -e $script ]] && bash "$script"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN:-*}"
