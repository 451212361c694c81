#!/usr/bin/env bash
# Run every Go fuzz target in the module for the given time each (default 60s), one at a time.
set -euo pipefail
t=${1:-60s}
cd "$(dirname "$0")/.."
fail=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== fuzz $pkg $target for $t"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" "$pkg"; then
      echo "== FAILED: $pkg $target"; fail=1
    fi
  done
done
exit $fail
