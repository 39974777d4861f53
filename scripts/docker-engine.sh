#!/usr/bin/env bash
# Make a Docker engine with Compose v2 and buildx ready on this machine, for the compose
# test (tests/deploy/test_compose.py) and for `docker compose up` by hand. Safe to run again.
#
#   1. an engine that already answers `docker info` is used as it is;
#   2. otherwise, as root on Debian: Debian's docker.io, plus docker-compose and
#      docker-buildx from the next Debian release (pinned low, so nothing else comes
#      from there), then `dockerd` started in the background;
#   3. the base images deploy/docker-compose.yml names are built as look-alikes from
#      Debian packages (deploy/lookalike/) when, and only when, the engine lacks them:
#      a machine that can pull the official images, or already has them, uses those.
#
# Exit status: 0 ready; 2 no engine can be had here (the one-line reason on stdout,
# e.g. not root and no engine running); 1 anything else failed.
# Usage: bash scripts/docker-engine.sh [--no-images]
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${SPARTAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
NEXT_SUITE="${SPARTAN_DOCKER_TOOLS_SUITE:-trixie}"
LOG_DIR="${SPARTAN_DOCKER_LOG_DIR:-/var/log}"
BASE_IMAGE="spartan-lookalike/debian:bookworm-minbase"

say() { echo "docker-engine: $*"; }
unavailable() { echo "no Docker engine: $*"; exit 2; }

engine_up() { docker info >/dev/null 2>&1; }
tools_ok() { docker compose version >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  if ((apt_updated == 0)); then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_engine() {
  command -v apt-get >/dev/null || unavailable "no engine running and no apt-get to install Debian's docker.io"
  local want=()
  command -v dockerd >/dev/null || want+=(docker.io)
  command -v docker >/dev/null || want+=(docker.io)
  command -v debootstrap >/dev/null || want+=(debootstrap)
  if ((${#want[@]})); then
    say "installing ${want[*]}"
    apt_install "${want[@]}"
  fi
  if ! tools_ok; then
    # Compose v2 and buildx are packaged only from the next release on; they need libc6 >= 2.34.
    local sources=/etc/apt/sources.list.d/spartan-docker-tools.sources
    if [[ ! -f $sources ]]; then
      cat >"$sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $NEXT_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
      cat >/etc/apt/preferences.d/spartan-docker-tools <<PIN
# Only packages asked for by name (pkg/$NEXT_SUITE) come from $NEXT_SUITE.
Package: *
Pin: release n=$NEXT_SUITE
Pin-Priority: 100
PIN
      apt_updated=0
    fi
    say "installing docker-compose and docker-buildx from $NEXT_SUITE"
    apt_install "docker-compose/$NEXT_SUITE" "docker-buildx/$NEXT_SUITE"
  fi
}

start_engine() {
  say "starting dockerd (log: $LOG_DIR/spartan-dockerd.log)"
  setsid nohup dockerd >"$LOG_DIR/spartan-dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    engine_up && return 0
    sleep 0.5
  done
  echo "dockerd did not answer within 30 s; last lines of $LOG_DIR/spartan-dockerd.log:" >&2
  tail -n 5 "$LOG_DIR/spartan-dockerd.log" >&2
  exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
  have_image "$BASE_IMAGE" && return 0
  command -v debootstrap >/dev/null || apt_install debootstrap
  local root
  root="$(mktemp -d /var/tmp/spartan-rootfs.XXXXXX)"
  say "debootstrap --variant=minbase bookworm (once per engine)"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$LOG_DIR/spartan-debootstrap.log" 2>&1 \
    || { echo "debootstrap failed; see $LOG_DIR/spartan-debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

build_lookalikes() {
  local tag dir missing=()
  # tag -> directory under deploy/lookalike
  declare -A dirs=([python:3.11-slim]=python [redis:7]=redis [nginx:stable]=nginx [prom/prometheus]=prometheus)
  for tag in "${!dirs[@]}"; do
    have_image "$tag" || missing+=("$tag")
  done
  ((${#missing[@]})) || return 0
  build_base
  local context
  context="$(mktemp -d /var/tmp/spartan-lookalike.XXXXXX)"
  for tag in "${missing[@]}"; do
    dir="deploy/lookalike/${dirs[$tag]}"
    say "building look-alike $tag from Debian packages ($dir)"
    rm -rf "${context:?}"/* && cp -a "$dir"/. "$context"/
    # pip inside a build trusts the same CAs as the host's pip.
    [[ ${dirs[$tag]} != python ]] || cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
    DOCKER_BUILDKIT=1 docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$tag" "$context" >/dev/null \
      || { rm -rf "$context"; echo "building $tag failed" >&2; exit 1; }
  done
  rm -rf "$context"
}

if ! engine_up || ! tools_ok; then
  if [[ $(id -u) -ne 0 ]]; then
    engine_up || unavailable "none answers \`docker info\` and installing one needs root"
    unavailable "the engine lacks \`docker compose\` or \`docker buildx\` and installing them needs root"
  fi
  install_engine
  engine_up || start_engine
fi
[[ "${1:-}" == "--no-images" ]] || build_lookalikes
say "ready ($(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /'))"
