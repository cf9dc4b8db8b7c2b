#!/usr/bin/env bash
# Copy the E2E services' logs into DEST (default reports/services) for a failed CI job's artifact:
# every opsdesk-e2e state dir's *.log (native backend, integration and reliability runs that kept
# theirs), `testbed status`, and the logs of our labelled containers (docker backend).
# Never fails the job: missing pieces are noted in DEST/README.txt.
set -uo pipefail
dest="${1:-reports/services}"
mkdir -p "$dest"
note() { echo "$*" >>"$dest/README.txt"; }

found=0
for dir in /dev/shm/opsdesk-e2e-* "${TMPDIR:-/tmp}"/opsdesk-e2e-*; do
  [ -d "$dir" ] || continue
  while IFS= read -r -d '' log; do
    rel="${log#"$dir"/}"
    mkdir -p "$dest/$(basename "$dir")/$(dirname "$rel")"
    if cp "$log" "$dest/$(basename "$dir")/$rel" 2>/dev/null; then
      found=$((found + 1))
    else
      note "unreadable: $log"
    fi
  done < <(find "$dir" -maxdepth 3 -name '*.log' -type f -print0 2>/dev/null)
done
note "state-dir logs copied: $found"

venv="${E2E_VENV:-.venv}"
if [ -x "$venv/bin/python" ]; then
  "$venv/bin/python" -m testbed status >"$dest/status.txt" 2>&1 || true
else
  note "no $venv: testbed status not run"
fi

# The label compose puts on testbed's containers, from testbed itself (it has been renamed before).
label=""
if [ -x "$venv/bin/python" ]; then
  label=$("$venv/bin/python" -c 'from testbed.services.containers import LABEL; print(LABEL)' 2>/dev/null)
fi
if [ -z "$label" ]; then
  note "testbed not importable from $venv: no container logs"
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  mkdir -p "$dest/docker"
  docker ps -a --filter "label=$label" --format '{{.Names}}' 2>/dev/null |
    while IFS= read -r name; do
      docker logs --timestamps "$name" >"$dest/docker/$name.log" 2>&1 || note "docker logs $name failed"
    done
else
  note "no Docker engine: no container logs"
fi
echo "service logs collected into $dest ($found state-dir logs)"
