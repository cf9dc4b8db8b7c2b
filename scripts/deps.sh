#!/bin/sh -e
# Create the virtualenv and install exactly what uv.lock (the workspace lock) pins.
#   PYTHON  interpreter to build $VENV on. When set and $VENV was built on another interpreter,
#           $VENV is rebuilt on PYTHON (said, never silent). When unset, an existing working
#           $VENV is kept and a new one is built on python3.
#   VENV    the virtualenv (default .venv)
#   DEPS_GROUPS  extra dependency groups of pyproject.toml (e.g. DEPS_GROUPS=bench)
# uv is always pinned to $VENV's own interpreter: it never replaces it or downloads another one.
# One deps run per venv at a time (two terminals after a lock change, or a rebuild racing a
# sync): re-run this script under flock(1) where it exists, before any default is set. The lock
# dies with its holder.
if [ -z "${DEPS_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
  DEPS_LOCKED=1 exec flock "${VENV:-.venv}.lock" "$0" "$@"
fi
# make exports PYTHONPYCACHEPREFIX=$VENV/pycache: the interpreter checks below would write bytecode
# there and so create $VENV before it is a virtualenv, which this script then refuses to touch.
unset PYTHONPYCACHEPREFIX
requested=${PYTHON:-}
: "${PYTHON:=python3}" "${VENV:=.venv}"
UV_VERSION=0.13.8
root=$(cd "$(dirname "$0")/.." && pwd)
pyproject="$root/pyproject.toml"
start=$(date +%s)

# Prints "VERSION REALPATH" of the interpreter running it; exits 3 when VERSION fails
# requires-python (argv[1]), 2 when requires-python cannot be read. Python 2 syntax-compatible,
# so that an old interpreter gets the clear message below rather than a traceback.
IDENTIFY='
import os, re, sys
text = open(sys.argv[1]).read()
found = re.search(r"^requires-python\s*=\s*\"([^\"]*)\"", text, re.M)
if not found:
    sys.stderr.write("no requires-python in %s\n" % sys.argv[1]); sys.exit(2)
have = tuple(sys.version_info[:3])
ok = True
for clause in found.group(1).split(","):
    m = re.match(r"\s*(>=|<=|==|!=|>|<)\s*([0-9]+(?:\.[0-9]+)*)\s*$", clause)
    if not m:
        sys.stderr.write("cannot read requires-python clause %r\n" % clause); sys.exit(2)
    want = tuple(int(x) for x in m.group(2).split("."))
    mine = have[:len(want)]
    ok = ok and {">=": mine >= want, "<=": mine <= want, ">": mine > want, "<": mine < want,
                 "==": mine == want, "!=": mine != want}[m.group(1)]
print("%d.%d.%d %s" % (have + (os.path.realpath(sys.executable),)))
sys.exit(0 if ok else 3)
'
requires() { sed -n 's/^requires-python *= *"\(.*\)"/\1/p' "$pyproject"; }

# identify INTERPRETER: "VERSION REALPATH" on stdout; the exit code says whether it is usable.
identify() { "$1" -c "$IDENTIFY" "$pyproject" 2>/dev/null; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "deps: PYTHON=$PYTHON is not an interpreter on PATH; set PYTHON to a Python $(requires) (requires-python in pyproject.toml)" >&2
  exit 2
fi
rc=0 && want=$(identify "$PYTHON") || rc=$?
if [ "$rc" = 3 ]; then
  echo "deps: PYTHON=$PYTHON is Python ${want%% *}, but pyproject.toml requires Python $(requires); set PYTHON to one that does (e.g. PYTHON=python3.12)" >&2
  exit 2
elif [ "$rc" != 0 ]; then
  why=$("$PYTHON" -c "$IDENTIFY" "$pyproject" 2>&1 >/dev/null | grep -m 1 .) || true
  echo "deps: PYTHON=$PYTHON does not run as a Python interpreter (${why:-exit $rc}); set PYTHON to a Python $(requires)" >&2
  exit 2
fi

# Rebuild deliberately, never as a side effect of uv: when PYTHON was asked for and $VENV is on
# another interpreter, or when $VENV's interpreter no longer runs or no longer satisfies the project.
# Only directories and the Makefile's bytecode cache ($VENV/pycache/**.pyc: make exports
# PYTHONPYCACHEPREFIX there), as a copy of a working tree without its venv leaves (act's does):
# no one's data and no venv. Remove them and build one.
if [ -d "$VENV" ] && [ ! -L "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] &&
  [ -z "$(find "$VENV" ! -type d ! -path "$VENV/pycache/*.pyc" -print | head -n 1)" ]; then
  find "$VENV" -depth \( -type d -empty -o -type f -path "$VENV/pycache/*.pyc" \) -delete
fi
if [ -e "$VENV" ]; then
  reason=""
  rc=0 && have=$(identify "$VENV/bin/python") || rc=$?
  if [ "$rc" = 3 ]; then
    reason="it is on Python ${have%% *}, which fails requires-python $(requires)"
  elif [ "$rc" != 0 ]; then
    reason="its interpreter $VENV/bin/python does not run"
  elif [ -n "$requested" ] && [ "$have" != "$want" ]; then
    reason="it is on Python $have and PYTHON=$requested is Python $want"
  fi
  if [ -n "$reason" ]; then
    if [ ! -f "$VENV/pyvenv.cfg" ]; then
      echo "deps: $VENV is not a virtualenv (no pyvenv.cfg), so it is not removed; move it away or set VENV=<dir>" >&2
      exit 2
    fi
    echo "deps: rebuilding $VENV: $reason"
    rm -rf "$VENV"
  fi
fi
pinned_uv_on_path() { command -v uv >/dev/null 2>&1 && uv --version | grep -q "uv $UV_VERSION"; }
if [ ! -x "$VENV/bin/python" ]; then
  # Debian and Ubuntu ship ensurepip apart (python3.X-venv); without it venv stops halfway.
  if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    venv_pkg="python$(echo "${want%% *}" | cut -d. -f1-2)-venv"
    if [ "${CI:-}" = true ] && command -v apt-get >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
      echo "deps: installing $venv_pkg (CI=true): PYTHON=$PYTHON has no ensurepip"
      $sudo apt-get install -y -q --no-install-recommends "$venv_pkg" >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "$venv_pkg" >/dev/null; }
    else
      echo "deps: PYTHON=$PYTHON has no ensurepip, which venv needs; install $venv_pkg (apt-get install $venv_pkg), or set PYTHON to another interpreter" >&2
      exit 2
    fi
  fi
  echo "deps: creating $VENV with Python ${want%% *} (${want#* })"
  # pip is only needed to install uv; with the pinned uv at hand, skip its ~3 s bootstrap.
  if pinned_uv_on_path; then "$PYTHON" -m venv --without-pip "$VENV"; else "$PYTHON" -m venv "$VENV"; fi
fi
if ! "$VENV/bin/uv" --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  if pinned_uv_on_path; then
    ln -sf "$(command -v uv)" "$VENV/bin/uv"
  else
    # A venv made by uv has no pip; the standard library can add it.
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --default-pip >/dev/null
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
fi
# uv trusts its own CA roots (or the system's with UV_NATIVE_TLS), not pip's configuration: behind
# a TLS-intercepting proxy pip works with the bundle it is given and uv fails with UnknownIssuer.
# Give uv that bundle, in pip's order: PIP_CERT, pip's config (global.cert), then requests' vars.
pip_ca_bundle() {
  if [ -n "${PIP_CERT:-}" ]; then echo "$PIP_CERT"; return; fi
  for py in "$VENV/bin/python" "$PYTHON"; do
    cert=$("$py" -m pip config get global.cert 2>/dev/null) && [ -n "$cert" ] && { echo "$cert"; return; }
  done
  echo "${REQUESTS_CA_BUNDLE:-${CURL_CA_BUNDLE:-}}"
}
if [ -z "${SSL_CERT_FILE:-}" ] && [ -z "${UV_NATIVE_TLS:-}" ]; then
  bundle=$(pip_ca_bundle)
  if [ -n "$bundle" ] && [ -f "$bundle" ]; then
    export SSL_CERT_FILE="$bundle"
    echo "deps: uv uses the CA bundle pip is configured with ($bundle)"
  fi
fi
tls_hint() {
  if grep -q -e 'UnknownIssuer' -e 'invalid peer certificate' -e 'certificate verify failed' "$1"; then
    echo "deps: uv does not trust this network's TLS certificates; set SSL_CERT_FILE=<your CA bundle, e.g. /etc/ssl/certs/ca-certificates.crt> or UV_NATIVE_TLS=1 (the system's trust store)" >&2
  fi
}
uv_log=$(mktemp)
trap 'rm -f "$uv_log"' EXIT
# --python: the venv's own interpreter, whatever UV_PYTHON says (Nix sets it), so uv never
# swaps it; --inexact keeps pip in the venv; --frozen refuses a lock that is out of date.
set --
for group in ${DEPS_GROUPS:-}; do set -- "$@" --group "$group"; done
UV_PROJECT_ENVIRONMENT="$(cd "$VENV" && pwd)" UV_PYTHON_DOWNLOADS=never \
  "$VENV/bin/uv" sync --quiet --frozen --inexact --project "$root" --python "$VENV/bin/python" "$@" \
  2>"$uv_log" || { rc=$?; cat "$uv_log" >&2; tls_hint "$uv_log"; exit "$rc"; }
cat "$uv_log" >&2
# The lock, exactly, for these groups: remove what it does not list (a leftover pytest plugin
# would still load in every run). The venv's bootstrap (pip, setuptools, wheel, uv) and the
# workspace's own distributions stay: they are not in the export.
# --color never: output read by a program, never by a person; FORCE_COLOR (which CI sets) would
# otherwise wrap every package name in escape codes, and every package would look stale.
export_lock() {
  UV_PROJECT_ENVIRONMENT="$(cd "$VENV" && pwd)" "$VENV/bin/uv" export --color never --quiet --frozen --no-hashes \
    --no-header --no-annotate --no-emit-workspace --project "$root" "$@"
}
stale=$({ export_lock "$@" && echo @@ && "$VENV/bin/uv" pip list --color never --quiet --python "$VENV/bin/python" --format freeze; } |
  awk 'function norm(n) { n = tolower(n); gsub(/[-_.]+/, "-", n); return n }
    $0 == "@@" { installed = 1; next }
    /^-/ || NF == 0 { next }
    { split($0, part, /[=<>!~; @]/); name = norm(part[1]) }
    !installed { wanted[name] = 1; next }
    !(name in wanted) && name !~ /^(pip|setuptools|wheel|uv)$/ && !index(" " members " ", " " name " ") { print name }' \
    members="$(for f in "$pyproject" "$root"/*/pyproject.toml; do sed -n 's/^name *= *"\(.*\)"/\1/p' "$f" | head -n 1; done | tr '\n' ' ')")
if [ -n "$stale" ]; then
  echo "deps: removing from $VENV what uv.lock does not list for it: $(echo "$stale" | tr '\n' ' ')"
  # shellcheck disable=SC2086  # one package name per word
  "$VENV/bin/uv" pip uninstall --quiet --python "$VENV/bin/python" $stale
fi
# The Makefile compares PYTHON with this to decide whether deps must run again.
printf '%s\n' "$PYTHON" >"$VENV/.deps-python"
touch "$VENV/.deps-stamp"
echo "deps: $VENV ready in $(($(date +%s) - start))s"
