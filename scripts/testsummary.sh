#!/usr/bin/env bash
# Pass `go test -v` output through, and end with a summary of integration tests run, skipped and failed.
# Exits non-zero when go test failed or when any test was skipped without MIG2_ALLOW_SKIP=1.
set -uo pipefail
log=$(mktemp)
tee "$log"
rc=${PIPESTATUS[0]}
pass=$(grep -c -- '^--- PASS' "$log" || true)
fail=$(grep -c -- '^--- FAIL' "$log" || true)
skip=$(grep -c -- '^--- SKIP' "$log" || true)
echo "== integration summary: ${pass} passed, ${fail} failed, ${skip} skipped (top-level tests)"
if grep -q -- '^FAIL' "$log"; then rc=1; fi
if [ "$skip" -gt 0 ] && [ "${MIG2_ALLOW_SKIP:-0}" != 1 ]; then
  echo "== integration tests were skipped (see the SKIP lines above); this is a failure unless MIG2_ALLOW_SKIP=1" >&2
  grep -A2 -- '^--- SKIP' "$log" >&2
  rc=1
fi
rm -f "$log"
exit $rc
