#!/usr/bin/env bash
# The Docker engine for the compose backend: reuse one that answers; under CI=true, provide one.
#   docker-engine.sh check         exit 0 when an engine >= 25 with Compose v2 answers; else say why
#   docker-engine.sh ensure        reuse such an engine, or (CI=true only) install and start dockerd
#   docker-engine.sh stop          stop the dockerd this script started, proven by pid + start time
#   docker-engine.sh run -- CMD..  ensure, run CMD, then stop the daemon if this call started it
# An engine that already answers is never stopped. Outside CI nothing is installed or started.
# Env: E2E_ENGINE_DIR (record and log; default /run/testbed-engine), E2E_CACHE_DIR (the .debs).
set -euo pipefail

MIN_ENGINE=25
DIR=${E2E_ENGINE_DIR:-/run/testbed-engine}
RECORD=$DIR/dockerd.owner # "<dockerd pid> <its start time> <owner pid> <owner start time>"
LOG=$DIR/dockerd.log
CACHE=${E2E_CACHE_DIR:-/var/cache/testbed}
# --iptables=false: leave the host's firewall alone (published 127.0.0.1 ports still work);
# --ip-forward=false: do not switch on net.ipv4.ip_forward. Never --bridge=none: -p is then ignored.
DOCKERD_FLAGS=(--iptables=false --ip6tables=false --ip-forward=false --storage-driver=overlay2)

say() { echo "docker-engine: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, who a process really is.
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086  # split the fields on purpose
  set -- $stat
  echo "${20}"
}

# True when pid $1 runs and started at $2 (a reused pid has another start time).
same_process() { [[ -n "$1" && "$(start_time "$1" 2>/dev/null)" == "$2" ]]; }

server_version() { docker version --format '{{.Server.Version}}' 2>/dev/null; }
compose_version() { docker compose version --short 2>/dev/null; }
major() { local v=${1#v}; echo "${v%%.*}"; }

# Empty when an engine >= 25 with Compose v2 answers; else one line saying what is missing.
problem() {
  command -v docker >/dev/null 2>&1 || { echo "no docker command on PATH"; return; }
  local server compose
  server=$(server_version) || server=""
  [[ -n "$server" ]] || { echo "no Docker engine answers ($(docker version 2>&1 >/dev/null | tail -n 1))"; return; }
  (($(major "$server") >= MIN_ENGINE)) ||
    { echo "Docker Engine $server is older than $MIN_ENGINE (the compose file uses healthcheck.start_interval)"; return; }
  compose=$(compose_version) || compose=""
  [[ "$(major "$compose")" -ge 2 ]] 2>/dev/null || { echo "no Compose v2 (docker compose version: ${compose:-missing})"; return; }
}

installed_engine_ok() {
  local v
  v=$(dockerd --version 2>/dev/null | sed -nE 's/^Docker version ([0-9]+)\..*/\1/p')
  [[ -n "$v" ]] && ((v >= MIN_ENGINE))
}

# Debian trixie's docker.io (Engine >= 25) and docker-compose (v2) install on bookworm as local
# .debs; apt resolves containerd, runc and iptables from the machine's own sources. A private
# sources dir fetches them without touching the machine's apt configuration. Args: package names.
install_engine() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "CI=true and no Docker engine answers, but installing one needs root and apt-get;"
    say "install Docker Engine >= $MIN_ENGINE with Compose v2 first (https://docs.docker.com/engine/install/)"
    return 1
  fi
  local apt="$CACHE/engine-apt" uri t0 pkgs=("$@")
  t0=$(now)
  uri=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n 1 || true)
  uri=${uri:-http://deb.debian.org/debian}
  mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  cat >"$apt/sources/trixie.sources" <<EOF
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  say "installing ${pkgs[*]} from Debian trixie ($uri) for Engine >= $MIN_ENGINE and Compose v2"
  apt-get "${opts[@]}" -qq update >/dev/null
  (cd "$apt/debs" && rm -f ./*.deb && apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq download "${pkgs[@]}" >/dev/null)
  export DEBIAN_FRONTEND=noninteractive
  local debs=("$apt"/debs/*.deb)
  apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null; }
  say "installed ${pkgs[*]} ($(dockerd --version 2>/dev/null | cut -d, -f1), Compose $(compose_version)) in $(since "$t0") s"
}

start_daemon() {
  local t0 pid
  t0=$(now)
  mkdir -p "$DIR"
  # Own session: Ctrl-C of the run must not reach dockerd before compose has taken its
  # containers down; `stop` ends it afterwards.
  setsid dockerd "${DOCKERD_FLAGS[@]}" >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid $(start_time "$pid") $$ $(start_time $$)" >"$RECORD"
  while [[ -z "$(server_version)" ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "dockerd exited at start; its log ($LOG) ends with:"
      tail -n 15 "$LOG" | sed 's/^/    /' >&2
      rm -f "$RECORD"
      return 1
    fi
    if (($(date +%s) - ${t0%.*} > 60)); then
      say "dockerd (pid $pid) does not answer after 60 s; log: $LOG"
      stop_daemon
      return 1
    fi
    sleep 0.2
  done
  say "started dockerd $(server_version) (pid $pid, log $LOG) in $(since "$t0") s"
}

# Reads the record into DPID DSTART OPID OSTART; false when there is none.
read_record() {
  [[ -f "$RECORD" ]] || return 1
  read -r DPID DSTART OPID OSTART <"$RECORD" || return 1
}

# The daemon of a run that was killed before it could stop it: the next run takes it over.
adopt_orphan() {
  local DPID DSTART OPID OSTART
  read_record || return 1
  same_process "$DPID" "$DSTART" || return 1
  same_process "$OPID" "$OSTART" && return 1
  echo "$DPID $DSTART $$ $(start_time $$)" >"$RECORD"
  say "adopted dockerd (pid $DPID) left running by a killed run; it stops at the end of this one"
}

stop_daemon() {
  local DPID DSTART OPID OSTART t0
  read_record || { say "no dockerd recorded as started here; nothing to stop"; return 0; }
  if ! same_process "$DPID" "$DSTART"; then
    rm -f "$RECORD"
    say "the recorded dockerd (pid $DPID) is gone"
    return 0
  fi
  t0=$(now)
  kill -TERM "$DPID"
  # dockerd stops its containers (10 s grace each) and its containerd before it exits.
  for _ in $(seq 1 300); do same_process "$DPID" "$DSTART" || break; sleep 0.1; done
  if same_process "$DPID" "$DSTART"; then
    say "dockerd (pid $DPID) ignored SIGTERM for 30 s; SIGKILL"
    kill -KILL "$DPID"
  fi
  rm -f "$RECORD"
  say "stopped dockerd (pid $DPID) in $(since "$t0") s"
}

has_compose_v2() { [[ "$(major "$(compose_version || true)")" -ge 2 ]] 2>/dev/null; }

# Sets STARTED=1 when this call started (or adopted) the daemon.
STARTED=0
ensure() {
  local why pkgs=()
  why=$(problem)
  if [[ -z "$why" ]]; then
    if adopt_orphan; then STARTED=1; return 0; fi
    say "reusing Docker Engine $(server_version) with Compose $(compose_version) (left running)"
    return 0
  fi
  if [[ "${CI:-}" != true ]]; then
    say "$why"
    say "install Docker Engine >= $MIN_ENGINE with the Compose v2 plugin and start it, or use E2E_BACKEND=native"
    return 1
  fi
  if [[ -n "$(server_version)" ]] && (($(major "$(server_version)") < MIN_ENGINE)); then
    say "$why; that engine is not this project's to replace: upgrade it, or use E2E_BACKEND=native"
    return 1
  fi
  command -v docker >/dev/null 2>&1 || pkgs+=(docker-cli)
  if [[ -z "$(server_version)" ]]; then installed_engine_ok || pkgs+=(docker.io); fi
  has_compose_v2 || pkgs+=(docker-compose)
  ((${#pkgs[@]} == 0)) || install_engine "${pkgs[@]}"
  if [[ -z "$(server_version)" ]]; then
    start_daemon
    STARTED=1
  fi
  why=$(problem)
  [[ -z "$why" ]] || { say "$why"; return 1; }
}

case "${1:-}" in
  check)
    why=$(problem)
    [[ -z "$why" ]] || { say "$why"; exit 1; }
    echo "Docker Engine $(server_version), Compose $(compose_version)" ;;
  ensure) ensure ;;
  stop) stop_daemon ;;
  run)
    shift
    [[ "${1:-}" == -- ]] && shift
    (($#)) || { say "usage: docker-engine.sh run -- COMMAND..."; exit 2; }
    ensure
    # shellcheck disable=SC2329  # called by the EXIT trap
    finish() { if ((STARTED)); then stop_daemon; fi; }
    trap finish EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    set +e
    "$@"
    code=$?
    set -e
    exit "$code" ;;
  *)
    echo "usage: docker-engine.sh check|ensure|stop|run -- COMMAND..." >&2
    exit 2 ;;
esac
