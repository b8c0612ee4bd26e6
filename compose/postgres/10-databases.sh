#!/usr/bin/env bash
# Runs once, when the PostgreSQL data directory is created (/docker-entrypoint-initdb.d):
# one database per service, each owned by its own role whose password comes from the
# service's secret file. Services then create their tables themselves (migrations).
set -euo pipefail
SECRETS=${SECRETS:-/run/secrets}
for db in accounts social; do
  password=$(tr -d '\n' <"$SECRETS/postgres_${db}_password")
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v role="$db" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'role') \gexec
SQL
done
