#!/usr/bin/env bash
# Offline checks of flake.nix/flake.lock in DIR (default: the checkout):
#   1. nix-instantiate --parse flake.nix
#   2. evaluate devShells for all four systems against the stub nixpkgs (scripts/flake-stub.nix)
#   3. nix flake metadata --offline --no-update-lock-file (the lock matches the inputs)
# nixpkgs itself is never fetched. Needs nix on PATH; installing it is an explicit step
# (apt-get install nix-bin, or cachix/install-nix-action in CI), never a side effect of lint.
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
nix-instantiate --readonly-mode --eval --strict --json "$here/flake-stub.nix" --arg dir "$dir" >/dev/null

# Copy only the flake files: `path:` would otherwise copy the whole checkout (.venv) into the store.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$dir/flake.nix" "$dir/flake.lock" "$tmp/"
nix --extra-experimental-features 'nix-command flakes' flake metadata "path:$tmp" \
  --offline --no-update-lock-file --no-write-lock-file >/dev/null
