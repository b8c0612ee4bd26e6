#!/usr/bin/env bash
# The container test: the core profile of compose.yaml, for real, on a local engine.
#   1. builds the third-party stand-ins (Dockerfile here: RabbitMQ, PostgreSQL, the MongoDB
#      stand-in, from Debian packages) — the project's images come from ../images.sh first;
#   2. makes a fresh set of secrets, brings the core profile up with compose.test.yaml
#      (host networking only, ports apart from ./dev up) and waits on the healthchecks;
#   3. smoke test through the containerised gateway: loadgen (the `tools` profile's image)
#      sends a few hundred mixed operations and verifies each: 0 lost, 0 duplicated;
#   4. checks every container runs as a non-root user on a read-only root filesystem;
#   5. takes everything down and removes what the run created, by id.
# Usage: compose/test/run.sh TAG. Needs DOCKER_HOST at a running engine, the images
# switchyard/*:TAG and local/debian:bookworm (../images.sh), MONGO_WHEELS_PIP (a pip that
# can build the stand-in's wheels) and MONGO_PIP (its pinned requirements).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
COMPOSE_DIR="$(dirname "$HERE")"
TAG=${1:?usage: run.sh TAG}
WORK=${SWITCHYARD_CONTAINER_WORK:-/var/tmp/switchyard-container-test}
PROJECT="switchyard-test-$$"
BASE=local/debian:bookworm

say() { echo "containers: $*"; }
die() { echo "containers: error: $*" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
export SWITCHYARD_TAG=$TAG SWITCHYARD_SECRETS="$WORK/secrets"
# Host networking cannot publish ports, and an override cannot remove a key: the run uses
# compose.yaml + compose.test.yaml merged by docker-compose itself, with `ports` dropped.
compose() {
  docker-compose -p "$PROJECT" -f "$WORK/compose.yaml" "$@"
}
merge() {
  docker-compose -p "$PROJECT" -f "$COMPOSE_DIR/compose.yaml" -f "$HERE/compose.test.yaml" \
    --profile tools config >"$WORK/merged.yaml"
  python3 - "$WORK/merged.yaml" "$WORK/compose.yaml" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
for service in config["services"].values():
    service.pop("ports", None)
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PY
}

cleanup() {
  local status=$?
  if ((status != 0)); then
    say "failed; the last lines of each container's log:"
    for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
      echo "--- $(docker inspect --format '{{.Name}} tmpfs={{json .HostConfig.Tmpfs}} user={{.Config.User}}' "$id")"
      docker logs --tail 15 "$id" 2>&1 || true
    done
  fi
  if [[ -n ${KEEP_FAILED:-} && $status != 0 ]]; then
    say "KEEP_FAILED: left running as project $PROJECT ($WORK/compose.yaml)"
    exit "$status"
  fi
  compose --profile tools down --volumes --remove-orphans >/dev/null 2>&1 || true
  # Anything compose did not know about (a `run` container), by the project label.
  for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
    docker rm -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"); do
    docker volume rm "$id" >/dev/null 2>&1 || true
  done
  for image in rabbitmq postgres mongo; do
    docker image rm "switchyard-test/$image:$TAG" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# --- 1. stand-ins -------------------------------------------------------------------
say "building the MongoDB stand-in's wheels"
mkdir -p "$WORK/context/wheels"
cp "$HERE/Dockerfile" "$HERE/postgres-entrypoint.sh" "$WORK/context/"
read -r -a pins <<<"${MONGO_PIP:?MONGO_PIP is not set}"
"${MONGO_WHEELS_PIP:?MONGO_WHEELS_PIP is not set}" wheel -q --wheel-dir "$WORK/context/wheels" \
  "${pins[@]}" >"$WORK/wheels.log" 2>&1 || die "pip wheel failed: $(tail -3 "$WORK/wheels.log")"
for image in rabbitmq postgres mongo; do
  t0=$SECONDS
  docker build --network host --build-arg DEBIAN_IMAGE="$BASE" --target "$image" \
    -t "switchyard-test/$image:$TAG" "$WORK/context" >"$WORK/build-$image.log" 2>&1 ||
    die "building the $image stand-in failed: $(tail -5 "$WORK/build-$image.log")"
  say "switchyard-test/$image:$TAG built in $((SECONDS - t0)) s"
done

# --- 2. up ----------------------------------------------------------------------------
AMQP_HOST=127.0.0.1 AMQP_PORT=36672 PG_HOST=127.0.0.1 PG_PORT=15432 \
  bash "$COMPOSE_DIR/secrets.sh" "$SWITCHYARD_SECRETS" >/dev/null
merge || die "docker-compose config failed"
t0=$SECONDS
# `up` itself waits on every depends_on condition (service_healthy,
# service_completed_successfully) before starting what depends on it.
compose up -d >"$WORK/up.log" 2>&1 || die "docker-compose up failed: $(tail -5 "$WORK/up.log")"
healthy() { [[ $(docker inspect --format '{{.State.Health.Status}}' "$(compose ps -q "$1")") == healthy ]]; }
for ((i = 0; i < 120; i++)); do
  healthy gateway && healthy social && healthy catalog && healthy accounts && break
  sleep 1
done
healthy gateway || die "the gateway did not become healthy"
say "core profile up and healthy in $((SECONDS - t0)) s"
admin=$(docker inspect --format '{{.State.ExitCode}}' "$(compose ps -q create-admin)")
[[ $admin == 0 ]] || die "create-admin exited $admin"

# RabbitMQ's users are exactly the definitions': the admin and one per service, no guest.
users=$(docker exec "$(compose ps -q rabbitmq)" rabbitmqctl -q list_users | awk 'NR > 1 {print $1}' | sort | tr '\n' ' ')
[[ $users == "admin switchyard-accounts switchyard-catalog switchyard-gateway switchyard-social " ]] ||
  die "RabbitMQ users are not the definitions' ones: $users"
say "RabbitMQ users from the definitions: $users"

# --- 3. smoke test ----------------------------------------------------------------------
say "loadgen --verify through the containerised gateway"
if ! compose --profile tools run --rm loadgen >"$WORK/loadgen.log" 2>&1; then
  sed 's/^/containers:   /' "$WORK/loadgen.log"
  die "loadgen failed"
fi
grep -E '^(total|verify)[: ]' "$WORK/loadgen.log" | sed 's/^/containers:   /'
grep -Eq 'lost 0, duplicated 0' "$WORK/loadgen.log" || die "loadgen lost or duplicated operations"

# --- 4. every container: non-root, read-only root filesystem ------------------------------
bad=0
for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
  name=$(docker inspect --format '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
  user=$(docker inspect --format '{{.Config.User}}' "$id")
  readonly=$(docker inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$id")
  if [[ -z $user || $user == 0 || $user == root || $user == 0:* ]]; then
    echo "containers: $name runs as root" >&2
    bad=1
  fi
  if [[ $readonly != true ]]; then
    echo "containers: $name has a writable root filesystem" >&2
    bad=1
  fi
done
((bad == 0)) || die "containers must run as non-root on a read-only root filesystem"
say "every container runs as non-root on a read-only root filesystem"
say "passed"
