# shellcheck shell=bash disable=SC2034  # sets variables for the script that sources it
# Sourced by the scripts that run pytest (e2e.sh, examples.sh): PYTEST_ARGS, one string from make,
# as pytest's words. Needs PY (the venv's python). Sets:
#   user_args    PYTEST_ARGS split as a shell would (quotes respected), never eval'd
#   randomly     (-p randomly), or () when PYTEST_ARGS loads or blocks pytest-randomly itself:
#                ours next to the user's "-p no:randomly" made every test a TypeError
#   no_randomly  1 when PYTEST_ARGS blocks pytest-randomly (-p no:randomly), else empty
user_args=()
if [[ -n "${PYTEST_ARGS:-}" ]]; then
  mapfile -d '' -t user_args < <("$PY" -c \
    'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' \
    "$PYTEST_ARGS")
fi
randomly=(-p randomly)
no_randomly=
previous=
for word in "${user_args[@]}"; do
  plugin=
  if [[ "$previous" == -p ]]; then plugin=$word; elif [[ "$word" == -p?* ]]; then plugin=${word#-p}; fi
  case "$plugin" in
    randomly) randomly=() ;;
    no:randomly) randomly=() no_randomly=1 ;;
  esac
  previous=$word
done
unset previous plugin word
