#!/bin/sh -e
# Create the virtualenv and install exactly what backend/uv.lock pins.
: "${PYTHON:=python3}" "${VENV:=.venv}"
UV_VERSION=0.13.8
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  echo "deps: creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/uv" --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  if command -v uv >/dev/null 2>&1 && uv --version | grep -q "uv $UV_VERSION"; then
    ln -sf "$(command -v uv)" "$VENV/bin/uv"
  else
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
fi
# --inexact keeps pip in the venv; --frozen refuses a lock that is out of date.
UV_PROJECT_ENVIRONMENT="$(cd "$VENV" && pwd)" "$VENV/bin/uv" sync --quiet --frozen --inexact --project backend
touch "$VENV/.deps-stamp"
echo "deps: $VENV ready in $(( $(date +%s) - start ))s"
