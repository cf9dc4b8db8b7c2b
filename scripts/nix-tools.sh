#!/bin/sh -e
# Under CI=true, make sure the flake checks can run: install Debian's nix-bin (nix 2.8) if nix is
# missing. Elsewhere this does nothing: lint then skips the nix check with a note.
command -v nix-instantiate >/dev/null 2>&1 && exit 0
# A CI job whose flake checks run in a sibling job (LINT_SKIP=nix) needs no Nix.
case " ${LINT_SKIP:-} " in *" nix "*) exit 0 ;; esac
[ "${CI:-}" = "true" ] || exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "nix-tools: CI=true but nix is missing and apt-get (as root) is not available: install Nix first" >&2
  exit 1
fi
echo "nix-tools: installing Debian's nix-bin for the offline flake checks (CI=true, nix missing)"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends nix-bin >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends nix-bin >/dev/null; }
echo "nix-tools: $(nix-instantiate --version) installed in $(( $(date +%s) - start ))s"
