#!/usr/bin/env bash
# `make soak`: the flake hunt and the long reliability checks.
#   1. the E2E suite SOAK_RUNS times (default 20) with -n 2 and SOAK_RUNS times with -n 4, the
#      runs interleaved in random order, each in random test order (pytest-randomly, fresh seed)
#      with fresh services on private ports, each checked for leftovers afterwards;
#   2. testbed/tests/reliability -m soak (>= SOAK_TRIALS interrupts per signal for pytest and
#      make e2e, frozen services, two clones at once) with HYPOTHESIS_PROFILE=soak.
# Prints a summary table; exits non-zero on any failure.
# Env: SOAK_RUNS (20), SOAK_WORKERS ("2 4"), SOAK_TRIALS (10), SOAK_SKIP_RELIABILITY=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${E2E_VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
RUNS=${SOAK_RUNS:-20}
WORKERS=${SOAK_WORKERS:-"2 4"}
cd "$ROOT" || exit 2

# Private ports and state dir: a developer's `make up` (5433/6380) and other runs are untouched.
read -r PG_PORT REDIS_PORT < <(PYTHONPATH=testbed/tests/reliability "$PY" -c \
  'from rel_sandbox import free_port; print(free_port(), free_port())')
SOAK_DIR=$(mktemp -d /dev/shm/oprel-soak-XXXXXX 2>/dev/null || mktemp -d)
chmod 755 "$SOAK_DIR"
export E2E_BACKEND=native E2E_PG_PORT=$PG_PORT E2E_REDIS_PORT=$REDIS_PORT
export E2E_STATE_DIR=$SOAK_DIR/opsdesk-e2e-soak HYPOTHESIS_PROFILE=soak
unset E2E_DATABASE_URL E2E_REDIS_URL CI
echo "soak: ports $PG_PORT/$REDIS_PORT, state $E2E_STATE_DIR, $RUNS runs per worker count ($WORKERS)"

plan=()
for w in $WORKERS; do for ((i = 0; i < RUNS; i++)); do plan+=("$w"); done; done
mapfile -t plan < <(printf '%s\n' "${plan[@]}" | shuf)

declare -A runs=() fails=() secs=()
failed_lines=()
start_all=$SECONDS
k=0
for w in "${plan[@]}"; do
  k=$((k + 1))
  seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  log="$SOAK_DIR/run-$k-n$w.log"
  t0=$SECONDS
  "$VENV/bin/pytest" backend/tests/e2e -n "$w" -p randomly -p no:cacheprovider \
    "--randomly-seed=$seed" -q >"$log" 2>&1
  code=$?
  left=""
  if [[ -e "$E2E_STATE_DIR" ]] || ! PYTHONPATH=testbed/tests/reliability "$PY" -c \
    "import sys; from rel_sandbox import port_is_free as f; sys.exit(not (f($PG_PORT) and f($REDIS_PORT)))"; then
    left=" + leftovers"
    code=${code/#0/99}
  fi
  runs[$w]=$((${runs[$w]:-0} + 1))
  secs[$w]=$((${secs[$w]:-0} + SECONDS - t0))
  summary=$(grep -aE '^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$log" | tail -1)
  printf 'soak: run %2d/%d  -n %s  seed %-10s  exit %-3s %3ss  %s%s\n' \
    "$k" "${#plan[@]}" "$w" "$seed" "$code" "$((SECONDS - t0))" "$summary" "$left"
  if [[ $code -ne 0 ]]; then
    fails[$w]=$((${fails[$w]:-0} + 1))
    failed_lines+=("-n $w seed $seed: $log")
    "$PY" -m testbed down >/dev/null 2>&1 || true
  fi
done

rel_code=0
rel_summary="skipped (SOAK_SKIP_RELIABILITY=1)"
if [[ "${SOAK_SKIP_RELIABILITY:-0}" != "1" ]]; then
  t0=$SECONDS
  rel_log="$SOAK_DIR/reliability.log"
  unset E2E_BACKEND E2E_PG_PORT E2E_REDIS_PORT E2E_STATE_DIR  # each test makes its own sandbox
  "$VENV/bin/pytest" testbed/tests/reliability -m soak -p no:randomly -q -s -rxXfE \
    >"$rel_log" 2>&1
  rel_code=$?
  grep -aoE '(interrupt trials|postgres killed:|valkey killed:|postgres frozen:|valkey frozen:|XFAIL|FAILED|ERROR).*' "$rel_log" | cut -c1-240
  rel_summary="$(grep -aE '(passed|failed|error).* in [0-9.]+s' "$rel_log" | tail -1) ($((SECONDS - t0))s, log $rel_log)"
fi

echo
echo "soak summary (wall time $((SECONDS - start_all)) s)"
printf '  %-22s %5s %9s %9s\n' "E2E suite" runs failures "avg s"
total_fail=0
for w in $WORKERS; do
  n=${runs[$w]:-0} f=${fails[$w]:-0}
  total_fail=$((total_fail + f))
  printf '  %-22s %5s %9s %9s\n' "-n $w, random order" "$n" "$f" "$((n ? ${secs[$w]:-0} / n : 0))"
done
echo "  reliability -m soak:   $rel_summary"
for line in "${failed_lines[@]}"; do echo "  failed: $line"; done
if ((total_fail == 0 && rel_code == 0)); then
  rm -rf "$SOAK_DIR"
  echo "soak: OK"
  exit 0
fi
echo "soak: FAILED (logs in $SOAK_DIR)"
exit 1
