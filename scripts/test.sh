#!/usr/bin/env bash
# The README's test command: installs what the tests need (scripts/install_deps.sh),
# builds everything this machine can build, runs every test. The last line is
#   N passed, N failed[, N skipped]
# ONLY=regex bash scripts/test.sh runs a subset.
set -u
cd "$(dirname "$0")/.." || exit 1
if ! bash scripts/install_deps.sh; then echo "0 passed, 1 failed"; exit 1; fi
if ! make -j2 test-deps; then
  echo "build failed (see the compiler output above)"
  echo "0 passed, 1 failed"
  exit 1
fi
bash scripts/run_tests.sh
