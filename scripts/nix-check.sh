#!/usr/bin/env bash
# Offline checks of flake.nix/flake.lock in DIR (default: the checkout):
#   1. nix-instantiate --parse flake.nix
#   2. evaluate devShells for all four systems against the stub nixpkgs (scripts/flake-stub.nix),
#      once with nixpkgs' valkey at 8.x and once at a later major
#   3. nix flake metadata --offline --no-update-lock-file (the lock matches the inputs)
# nixpkgs itself is never fetched. Needs nix on PATH: `make lint` skips this without it, except
# under CI=true, where `make lint` first installs Debian's nix-bin (scripts/nix-tools.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(cd "${1:-$here/..}" && pwd)"

if ! command -v nix-instantiate >/dev/null 2>&1; then
  echo "nix-check: nix-instantiate not found; install Nix (Debian/Ubuntu: apt-get install nix-bin) or run inside 'nix develop'" >&2
  exit 2
fi
for f in flake.nix flake.lock; do
  [ -f "$dir/$f" ] || { echo "nix-check: $dir/$f is missing" >&2; exit 1; }
done

nix-instantiate --parse "$dir/flake.nix" >/dev/null

# --readonly-mode: evaluation needs no store; a syntax or attribute error names file:line.
for valkey in 8.1.8 9.1.1; do
  nix-instantiate --readonly-mode --eval --strict --json "$here/flake-stub.nix" --arg dir "$dir" \
    --argstr valkeyVersion "$valkey" >/dev/null
done

# Copy only the flake files: `path:` would otherwise copy the whole checkout (.venv) into the store.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$dir/flake.nix" "$dir/flake.lock" "$tmp/"
nix --extra-experimental-features 'nix-command flakes' flake metadata "path:$tmp" \
  --offline --no-update-lock-file --no-write-lock-file >/dev/null
