#!/bin/sh -e
# Under CI=true: install the system libraries that bundled PostgreSQL extensions load
# (uuid-ossp needs libossp-uuid.so.16), so the E2E suite can create every extension the official
# image offers. Outside CI nothing is installed: the native backend names what is missing instead.
[ "${CI:-}" = true ] || exit 0
if ldconfig -p 2>/dev/null | grep -q 'libossp-uuid\.so\.16'; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-libs: no apt-get; install the package providing libossp-uuid.so.16 (uuid-ossp)" >&2
  exit 1
fi
start=$(date +%s)
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get install -y -q --no-install-recommends libossp-uuid16 >/dev/null 2>&1 ||
  { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends libossp-uuid16 >/dev/null; }
echo "system-libs: libossp-uuid16 installed in $(( $(date +%s) - start ))s (uuid-ossp)"
