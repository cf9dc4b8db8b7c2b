#!/usr/bin/env bash
# `make e2e`: services up (or reused) -> parallel E2E suite in random order -> teardown.
# Env: N (xdist workers, default auto), SHARD (i/k: one CI shard), PYTEST_ARGS (passed through),
#      E2E_VENV (the venv; make sets it), E2E_KEEP=1 (leave services running), E2E_SEED.
# Exits with pytest's exit code (an empty shard, code 5, counts as success), or 3 when the
# services cannot be started (E2E_REQUIRE_SERVICES=0: pytest skips the E2E tests instead).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${E2E_VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
N=${N:-auto}
SHARD=${SHARD:-}
PYTEST_ARGS=${PYTEST_ARGS:-}
# make e2e requires its services (a missing service fails the run); plain pytest may skip outside CI.
export E2E_REQUIRE_SERVICES=${E2E_REQUIRE_SERVICES:-1}
cd "$ROOT"

now() { "$PY" -c 'import time; print(f"{time.monotonic():.3f}")'; }
since() { "$PY" -c "import sys, time; print(f'{time.monotonic() - float(sys.argv[1]):.2f}')" "$1"; }

# PYTEST_ARGS is one string from make; split it as a shell would (quotes respected), no eval.
user_args=()
if [[ -n "$PYTEST_ARGS" ]]; then
  mapfile -d '' -t user_args < <("$PY" -c \
    'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' \
    "$PYTEST_ARGS")
fi

collect_only=0
for arg in "${user_args[@]}"; do
  case "$arg" in --collect-only | --co) collect_only=1 ;; esac
done

shard_args=()
if [[ -n "$SHARD" ]]; then
  if [[ ! "$SHARD" =~ ^([0-9]+)/([0-9]+)$ ]] || ((BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > BASH_REMATCH[2])); then
    echo "e2e: SHARD must look like i/k with 1 <= i <= k (got '$SHARD')" >&2
    exit 2
  fi
  group=${BASH_REMATCH[1]} splits=${BASH_REMATCH[2]}
  # Every shard must shuffle identically, or shards overlap; pytest-split cuts after the shuffle.
  shard_args=(--splits "$splits" --group "$group" --durations-path "$ROOT/backend/.test_durations"
    --splitting-algorithm least_duration -p randomly "--randomly-seed=${E2E_SEED:-1}")
fi

started_here=0
if ((collect_only)); then
  echo "e2e: --collect-only: not starting services"
else
  # Were they already running (make up)? Then they stay up afterwards.
  if "$PY" -m testbed status >/dev/null 2>&1; then
    echo "e2e: reusing the running services"
  else
    started_here=1
  fi
  t0=$(now)
  # The owner is this shell: if it is SIGKILLed, `testbed reap` or the next run removes the servers.
  if "$PY" -m testbed up --owner-pid $$; then
    echo "e2e: services ready in $(since "$t0") s"
  else
    started_here=0
    # `make e2e` exists to run the E2E tests: a green run that skipped them all is easy to miss.
    if [[ "$E2E_REQUIRE_SERVICES" != "0" ]]; then
      echo "e2e: services unavailable (above); not running the suite (E2E_REQUIRE_SERVICES=0 lets pytest skip instead)" >&2
      exit 3
    fi
    echo "e2e: services unavailable (above); E2E_REQUIRE_SERVICES=0: pytest skips the E2E tests" >&2
  fi
fi

# shellcheck disable=SC2329  # called by the EXIT trap
teardown() {
  if ((started_here)) && [[ "${E2E_KEEP:-0}" != "1" ]]; then
    t1=$(now)
    "$PY" -m testbed down || echo "e2e: teardown failed; run \`make down\`" >&2
    echo "e2e: services stopped in $(since "$t1") s"
  elif ((started_here)); then
    echo "e2e: E2E_KEEP=1: services left running; \`make down\` stops them"
  fi
}
trap teardown EXIT
# bash skips the EXIT trap when a signal kills it; turn them into exits so teardown runs
# (the signal also reaches pytest, which stops like Ctrl-C; bash waits for it first).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

t2=$(now)
set +e
"$VENV/bin/pytest" backend/tests/e2e -n "$N" -p randomly "${shard_args[@]}" "${user_args[@]}"
code=$?
set -e
echo "e2e: pytest finished in $(since "$t2") s with exit code $code (N=$N${SHARD:+, shard $SHARD})"
if [[ -n "$SHARD" && $code -eq 5 ]]; then
  echo "e2e: shard $SHARD has no tests; nothing to run"
  code=0
fi
exit "$code"
