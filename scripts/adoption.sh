#!/usr/bin/env bash
# `make adoption`: a service outside this repository's layout adopts testbed from the built wheel.
# tests/adoption/app has its own pinned dependencies (requirements.txt, older than our lock). In
# a venv of its own: install its pins, install the testbed wheel with pip, check that pip changed
# none of the pins, then run its suite at -n 0 and -n 2 as its maintainers would.
# Env: E2E_VENV (the repository's venv, for uv and the interpreter), ADOPTION_VENV (default
# .venv-adoption), E2E_PG_PORT / E2E_REDIS_PORT (moved to spare ports when taken), E2E_STATE_DIR
# (the app's goes next to it, as <it>-adoption).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
APP="$ROOT/tests/adoption/app"
VENV=${E2E_VENV:-$ROOT/.venv}
AVENV=${ADOPTION_VENV:-$ROOT/.venv-adoption}
say() { echo "adoption: $*"; }

# The distribution under test: testbed's own once it has one, else the backend's.
dist="$ROOT/testbed"
[[ -f "$dist/pyproject.toml" ]] || dist="$ROOT/backend"
work=$(mktemp -d "${TMPDIR:-/tmp}/adoption.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$VENV/bin/uv" build --quiet --wheel --out-dir "$work/dist" "$dist"
wheel=$(echo "$work"/dist/*.whl)
say "built $(basename "$wheel")"

# The app's venv, on the repository's interpreter, with exactly its pins (re-synced each time:
# uv pip sync removes anything else, so a previous run's testbed does not linger).
python=$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')
[[ -x "$AVENV/bin/python" ]] || "$VENV/bin/uv" venv --quiet --python "$python" "$AVENV"
"$VENV/bin/uv" pip sync --quiet --python "$AVENV/bin/python" "$APP/requirements.txt"
"$VENV/bin/uv" pip freeze --python "$AVENV/bin/python" >"$work/before.txt"
"$AVENV/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
"$VENV/bin/uv" pip freeze --python "$AVENV/bin/python" | grep -v -i '^testbed[= ]' | grep -v -i '^opsdesk' >"$work/after.txt" || true
if ! diff -u "$work/before.txt" "$work/after.txt" >"$work/freeze.diff"; then
  say "installing the wheel changed the app's pinned dependencies:"
  grep '^[-+][^-+]' "$work/freeze.diff" | sed 's/^/  /'
  exit 1
fi
say "pip install $(basename "$wheel") changed none of the app's $(wc -l <"$work/before.txt") pins"

# Ports: ours when free, else spare ones (`make up` or another run may hold ours).
read -r pg redis < <("$AVENV/bin/python" - <<'PY'
import os, socket

def free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

def spare() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

pg, redis = int(os.environ.get("E2E_PG_PORT", 5433)), int(os.environ.get("E2E_REDIS_PORT", 6380))
print(pg if free(pg) else spare(), redis if free(redis) else spare())
PY
)

# The app's environment only: none of this repository's E2E_* or pytest settings. Each run
# starts and stops native services itself, as on a laptop without Docker: the servers are then
# children of the suite's own process, under its filterwarnings = error.
# An exported E2E_STATE_DIR holds this repository's services (another project's: the app would
# be refused there); the app's goes next to it, as <it>-adoption.
# Without trailing slashes: "$E2E_STATE_DIR/" would put it inside this repository's.
state=()
outer_state=${E2E_STATE_DIR:-}
while [[ "$outer_state" == */ ]]; do outer_state=${outer_state%/}; done
if [[ -n "$outer_state" ]]; then state=(E2E_STATE_DIR="$outer_state-adoption"); fi
env=(env -u PYTEST_ADDOPTS -u E2E_INIFILE -u E2E_DATABASE_URL -u E2E_REDIS_URL
  -u E2E_KEEP -u E2E_STATE_DIR -u DATABASE_URL -u REDIS_URL -u PYTHONDONTWRITEBYTECODE
  "${state[@]}"
  E2E_BACKEND=native E2E_PG_PORT="$pg" E2E_REDIS_PORT="$redis"
  # Bytecode cached under the app's venv, never in the tree: without it every xdist worker
  # compiles SQLAlchemy and Faker again (half a minute on a busy 2-core machine).
  PYTHONPYCACHEPREFIX="$AVENV/pycache")
status=0
for n in 0 2; do
  say "ledger suite at -n $n"
  log="$work/n$n.log"
  (cd "$APP" && "${env[@]}" "$AVENV/bin/python" -m pytest -n "$n" 2>&1) | tee "$log" \
    || { status=1; say "the suite failed at -n $n"; }
  # The adopter's words (no command of this repository) and lines of their own.
  if grep -nE '\bmake (up|down|status|env|reap)\b' "$log"; then
    status=1; say "testbed's output names this repository's make targets (the app has none)"
  fi
  if grep -nE '[^ ](stopped|started) (valkey|postgres)' "$log"; then
    status=1; say "testbed's output runs into pytest's on one line"
  fi
done
# The app adopts testbed by configuration alone: a line marked `# workaround: finding N` (what
# the suite needed before issue 19's fixes) is a harness bug, and fails the check.
if grep -rn --include='*.py' --include='*.toml' '# workaround: finding [0-9]' "$APP" >"$work/workarounds.txt"; then
  say "$(wc -l <"$work/workarounds.txt") workaround lines in the app (each one a testbed bug):"
  sed "s|^$APP/|  |" "$work/workarounds.txt"
  status=1
else
  say "no workaround lines in the app"
fi
exit "$status"
