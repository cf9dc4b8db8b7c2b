#!/usr/bin/env bash
# engine-install.sh CACHE_DIR PACKAGE...: install Debian trixie's docker.io (Engine >= 25),
# docker-cli and docker-compose (v2) as local .debs on bookworm; apt resolves containerd, runc and
# iptables from the machine's own sources. A private sources dir fetches them without touching the
# machine's apt configuration. Called by scripts/docker_engine.py (root, CI=true only).
set -euo pipefail
apt=$1/engine-apt
shift
uri=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1 || true)
uri=${uri:-http://deb.debian.org/debian}
mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
cat >"$apt/sources/trixie.sources" <<SOURCES
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources"
  -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
echo "docker-engine: installing $* from Debian trixie ($uri) for Engine >= 25 and Compose v2" >&2
apt-get "${opts[@]}" -qq update >/dev/null
(cd "$apt/debs" && rm -f ./*.deb && apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq download "$@" >/dev/null)
export DEBIAN_FRONTEND=noninteractive
debs=("$apt"/debs/*.deb)
apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null 2>&1 ||
  { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null; }
