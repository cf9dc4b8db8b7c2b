#!/usr/bin/env bash
# with-docker.sh COMMAND...: run COMMAND where the docker backend can work.
# Under CI=true: a Docker engine >= 25 with Compose v2 (reused when one answers; else installed and
# started, and stopped again at the end), and the E2E images: the official ones when the engine
# has or can pull them, else local builds from the pinned wheels (`make images`).
# Outside CI nothing is installed or started: COMMAND runs as is, and docker tests say what is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
(($#)) || { echo "usage: with-docker.sh COMMAND..." >&2; exit 2; }
[[ "${CI:-}" == true ]] || exec "$@"
# `make -n test` runs recipe lines that call $(MAKE), this one included: a dry run provides nothing.
flags=${MAKEFLAGS:-}; flags=${flags%% *}
[[ "$flags" != -* && "$flags" == *n* ]] && exec "$@"

if [[ "${1:-}" != --engine-ready ]]; then
  exec "$ROOT/scripts/docker-engine.sh" run -- "$0" --engine-ready "$@"
fi
shift

PY=${E2E_VENV:-$ROOT/.venv}/bin/python
eval "$("$PY" -m testbed.services.images names)"
have() { docker image inspect "$1" >/dev/null 2>&1 || docker pull --quiet "$1" >/dev/null 2>&1; }
if [[ -n "${E2E_PG_IMAGE:-}${E2E_REDIS_IMAGE:-}" ]]; then
  pg=${E2E_PG_IMAGE:-$OFFICIAL_PG} redis=${E2E_REDIS_IMAGE:-$OFFICIAL_REDIS}
  if ! have "$pg" || ! have "$redis"; then
    echo "with-docker: the engine neither has nor can pull $pg / $redis" >&2
    exit 1
  fi
elif ! have "$OFFICIAL_PG" || ! have "$OFFICIAL_REDIS"; then
  # testbed then runs the local builds: make sure they exist and are up to date.
  echo "with-docker: $OFFICIAL_PG / $OFFICIAL_REDIS cannot be pulled here; using" \
    "$LOCAL_PG and $LOCAL_REDIS (make images builds what is missing or out of date)" >&2
  "$ROOT/scripts/docker-images.sh"
fi
exec "$@"
