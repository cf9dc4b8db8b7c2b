#!/usr/bin/env bash
# `make example`: each example app's suite, in parallel, as its users would run it.
# The examples adopt testbed by configuration only (examples/*/pyproject.toml); each runs under
# its own project name, so it starts (and stops) services of its own. When something already
# answers on the E2E ports (e.g. `make up` for opsdesk), the examples use spare ports instead.
# Env: N (xdist workers, default 2), E2E_VENV, PYTEST_ARGS (passed through), E2E_STATE_DIR (each
#      app's goes next to it, as <it>-example-<app>).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${E2E_VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
N=${N:-2}
export E2E_REQUIRE_SERVICES=${E2E_REQUIRE_SERVICES:-1}
unset E2E_INIFILE  # each example's own pyproject.toml, as pytest finds it
# Each app a state dir of its own: one exported for opsdesk (CI, a developer's shell) holds
# opsdesk's services, and an app of another project was refused there. Next to the exported one
# (whoever exported it chose where state goes), else testbed's default for the app's project.
# Without trailing slashes: "$E2E_STATE_DIR/" gave <it>/-example-<app>, inside opsdesk's, whose
# `down` removed it under the app's running servers.
state=${E2E_STATE_DIR:-}
while [[ "$state" == */ ]]; do state=${state%/}; done
unset E2E_STATE_DIR
# The apps run one after the other on the same ports: each must stop what it started, or the
# next one is refused (E2E_KEEP=1 in a CI job's environment would keep the first one's).
unset E2E_KEEP

ports=$("$PY" "$ROOT/scripts/spare_ports.py")  # says so on stderr when it picks spare ones
read -r pg redis <<<"$ports"
export E2E_PG_PORT=$pg E2E_REDIS_PORT=$redis

# shellcheck source=scripts/pytest-args.sh
source "$ROOT/scripts/pytest-args.sh"  # user_args, randomly

# One xdist mode each, so both keep working with worker schemas: loadscope and loadgroup.
status=0
for spec in "inventory loadscope" "bookings loadgroup"; do
  read -r name dist <<<"$spec"
  echo "examples: $name (--dist $dist)"
  if [[ -n "$state" ]]; then export E2E_STATE_DIR="$state-example-$name"; fi
  "$VENV/bin/pytest" "$ROOT/examples/$name/tests" -n "$N" --dist "$dist" "${randomly[@]}" \
    "${user_args[@]}" || status=$?
done
exit "$status"
