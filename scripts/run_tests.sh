#!/usr/bin/env bash
# The project's test runner: `make test` calls it after building.
#
# Every test suite is a file tests/*.sh that this script sources; a suite calls
#   run_test NAME EXPECT COMMAND [ARGS...]
# where EXPECT is
#   pass           the command must exit 0;
#   fail:REGEX     the command must exit non-zero AND its output must match the
#                  extended regex (a planted bug or bad input that must be caught,
#                  with the right message);
# A suite may call `skip_test NAME WHY` for a test the machine cannot run
# (for example a real-GPU run without a GPU).
# Each test's full output goes to build/test-logs/NAME.log. The last line is
#   N passed, N failed[, N skipped]
# and the exit status is non-zero if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 1
LOGDIR=build/test-logs
mkdir -p "$LOGDIR"
PASSED=0; FAILED=0; SKIPPED=0; FAILED_NAMES=()
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
ONLY=${ONLY:-}            # ONLY=regex runs only the matching tests

run_test() {
  local name=$1 expect=$2; shift 2
  if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then return 0; fi
  local log="$LOGDIR/${name//\//__}.log" t0=$SECONDS rc ok=0
  if declare -F "$1" >/dev/null; then   # a suite's shell function (bounded by its own commands)
    ( "$@" ) >"$log" 2>&1; rc=$?
  else
    timeout "$TEST_TIMEOUT" "$@" >"$log" 2>&1; rc=$?
  fi
  case "$expect" in
    pass) [ $rc -eq 0 ] && ok=1 ;;
    fail:*) local re=${expect#fail:}
            if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -Eq -- "$re" "$log"; then ok=1; fi ;;
    *) echo "run_tests: bad EXPECT '$expect' for $name" >&2 ;;
  esac
  if [ $ok -eq 1 ]; then
    PASSED=$((PASSED+1)); printf 'PASS  %-48s %4ds\n' "$name" $((SECONDS-t0))
  else
    FAILED=$((FAILED+1)); FAILED_NAMES+=("$name")
    printf 'FAIL  %-48s %4ds (exit %d, expected %s) log: %s\n' "$name" $((SECONDS-t0)) $rc "$expect" "$log"
    tail -n 15 "$log" | sed 's/^/      | /'
  fi
}
skip_test() {
  if [ -n "$ONLY" ] && ! [[ $1 =~ $ONLY ]]; then return 0; fi
  SKIPPED=$((SKIPPED+1)); printf 'SKIP  %-48s %s\n' "$1" "$2"
}

for suite in tests/*.sh; do
  echo "== suite $suite"
  # shellcheck disable=SC1090
  source "$suite"
done

[ $FAILED -gt 0 ] && echo "failed: ${FAILED_NAMES[*]}"
if [ $SKIPPED -gt 0 ]; then echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else echo "$PASSED passed, $FAILED failed"; fi
[ $FAILED -eq 0 ]
