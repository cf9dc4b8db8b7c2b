#!/usr/bin/env bash
# `make e2e` (opsdesk's suite) and `make testbed-e2e` (testbed's own): a parallel E2E suite in
# random order. This script only builds pytest's arguments; the testbed plugin owns the services:
# it takes a lease (starting or reusing them), and at the end of the run stops what nobody else
# uses (E2E_KEEP=1 leaves them running).
# Env: SUITE (the suite's folder, default opsdesk's backend/tests/e2e), N (xdist workers,
#      default auto), SHARD (i/k: one CI shard of opsdesk's suite), PYTEST_ARGS (passed through),
#      E2E_VENV (the venv; make sets it), E2E_KEEP=1, E2E_SEED.
# Exits with pytest's exit code (an empty shard, code 5, counts as success), or 3 when the
# services cannot be started (E2E_REQUIRE_SERVICES=0: pytest skips the E2E tests instead).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${E2E_VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
N=${N:-auto}
SHARD=${SHARD:-}
SUITE=${SUITE:-backend/tests/e2e}
PYTEST_ARGS=${PYTEST_ARGS:-}
# make e2e requires its services (a missing service fails the run); plain pytest may skip outside CI.
export E2E_REQUIRE_SERVICES=${E2E_REQUIRE_SERVICES:-1}
cd "$ROOT"

# shellcheck source=scripts/pytest-args.sh
source "$ROOT/scripts/pytest-args.sh"  # user_args, randomly, no_randomly

shard_args=()
if [[ -n "$SHARD" ]]; then
  if [[ ! "$SHARD" =~ ^([0-9]+)/([0-9]+)$ ]] || ((BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > BASH_REMATCH[2])); then
    echo "e2e: SHARD must look like i/k with 1 <= i <= k (got '$SHARD')" >&2
    exit 2
  fi
  group=${BASH_REMATCH[1]} splits=${BASH_REMATCH[2]}
  # Every shard must shuffle identically, or shards overlap; pytest-split cuts after the shuffle.
  shard_args=(--splits "$splits" --group "$group" --durations-path "$ROOT/backend/.test_durations"
    --splitting-algorithm least_duration)
  # Without pytest-randomly the order is the file order, the same in every shard already.
  [[ -z "$no_randomly" ]] && shard_args+=("--randomly-seed=${E2E_SEED:-1}")
fi

# loadgroup: tests marked xdist_group(name) share a worker (the stdio tests share one server
# per worker that way); every other test is handed out as with the default, load.
dist=(-n "$N" --dist loadgroup)

# pytest is the process that gets signals (its plugin ends the lease on the way out).
if [[ -z "$SHARD" ]]; then
  exec "$VENV/bin/pytest" "$SUITE" "${dist[@]}" "${randomly[@]}" "${user_args[@]}"
fi
set +e
"$VENV/bin/pytest" "$SUITE" "${dist[@]}" "${randomly[@]}" "${shard_args[@]}" "${user_args[@]}"
code=$?
set -e
if [[ -n "$SHARD" && $code -eq 5 ]]; then
  echo "e2e: shard $SHARD has no tests; nothing to run"
  code=0
fi
exit "$code"
