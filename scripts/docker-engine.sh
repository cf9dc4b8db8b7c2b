#!/bin/sh -e
# docker-engine.sh check|ensure|stop|run -- CMD...: the Docker engine for the compose backend
# (scripts/docker_engine.py says what each does). Ownership of the daemon is decided in Python, as
# testbed decides it for its own servers; only the apt install stays in shell (engine-install.sh).
root=$(cd "$(dirname "$0")/.." && pwd)
exec "${E2E_VENV:-$root/.venv}/bin/python" "$root/scripts/docker_engine.py" "$@"
