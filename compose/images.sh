#!/usr/bin/env bash
# Builds the Switchyard images with compose/Dockerfile on a local Docker engine, with no
# registry: makes the Debian base image with debootstrap (once), vendors the crates into
# the build context, builds one image per binary, and prints each image's size and the
# build time. Usage: compose/images.sh [TAG] (default: dev). Needs DOCKER_HOST pointing at
# a running engine (./dev images starts one) and root (debootstrap).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TAG=${1:-dev}
BASE=local/debian:bookworm
# One image per binary: the services of the service table (`./dev images` passes them)
# and the tools.
read -r -a IMAGES <<<"${SWITCHYARD_IMAGES:-gateway accounts social catalog dlq loadgen}"
WORK=${SWITCHYARD_IMAGE_WORK:-/var/tmp/switchyard-images}

say() { echo "images: $*"; }
die() { echo "images: error: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine at ${DOCKER_HOST:-the default socket}"

# The base image: Debian's minimal bookworm, with the same mirror apt uses on this host
# (read from its sources, not written down here).
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  sources=$(find /etc/apt/sources.list.d -maxdepth 1 -name '*.sources' 2>/dev/null | sort | head -n1 || true)
  mirror=""
  [[ -n $sources ]] && mirror=$(awk '/^URIs:/ {print $2; exit}' "$sources")
  [[ -z $mirror && -r /etc/apt/sources.list ]] && mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
  [[ -n $mirror ]] || die "cannot find the Debian mirror in /etc/apt/sources.list*"
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$WORK"
  say "debootstrap bookworm (minbase)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $WORK/debootstrap.log)"
  if [[ -n $sources ]]; then
    grep -v '^#' "$sources" >"$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$rootfs"
  say "made $BASE"
fi

cd "$ROOT"
say "cargo vendor (crates into the build context)"
cargo vendor --locked --versioned-dirs target/docker-context-vendor >/dev/null 2>"$WORK.vendor.log" ||
  die "cargo vendor failed (see $WORK.vendor.log)"

start=$SECONDS
for image in "${IMAGES[@]}"; do
  t0=$SECONDS
  docker build --network host --build-arg DEBIAN_IMAGE="$BASE" -f compose/Dockerfile \
    --target "$image" -t "switchyard/$image:$TAG" . >"$WORK.$image.log" 2>&1 ||
    die "building $image failed (see $WORK.$image.log)"
  say "switchyard/$image:$TAG built in $((SECONDS - t0)) s"
done
say "all images in $((SECONDS - start)) s"
for image in "${IMAGES[@]}"; do
  size=$(docker image inspect "switchyard/$image:$TAG" --format '{{.Size}}')
  awk -v name="switchyard/$image:$TAG" -v size="$size" 'BEGIN { printf "images: %-28s %6.1f MB\n", name, size / 1e6 }'
done
