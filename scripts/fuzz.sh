#!/usr/bin/env bash
# Run every Go fuzz target in the module for the given time each (default 60s).
#   FUZZJOBS=N   targets fuzzed at the same time (default 1)
#   FUZZPAR=N    fuzz workers per target, go test -parallel (default: GOMAXPROCS)
#   FUZZLOG=DIR  keep each target's output and a summary (target, elapsed, execs) in DIR
#   FUZZONLY=RE  only the targets whose name matches the extended regular expression RE
# A crasher is written to the package's testdata/fuzz/ and then runs as a regression test in
# `go test`. The Go fuzz engine sometimes ends a short run with "context deadline exceeded" and
# no failing input (an engine flake, not a crash): such a run is retried once.
set -euo pipefail
t=${1:-60s}
jobs=${FUZZJOBS:-1}
par=${FUZZPAR:+-parallel=$FUZZPAR}
cd "$(dirname "$0")/.."
log=${FUZZLOG:-$(mktemp -d)}
mkdir -p "$log"
: >"$log/summary.tsv"

one() { # pkg target
  local pkg=$1 target=$2 out=$log/$(basename "$pkg").$2.log
  go test -run='^$' -fuzz="^$target\$" -fuzztime="$t" $par "$pkg" >"$out" 2>&1 && ok=1 || ok=0
  if [ $ok = 0 ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
    echo "== engine flake (no failing input): retrying $pkg $target once"
    go test -run='^$' -fuzz="^$target\$" -fuzztime="$t" $par "$pkg" >"$out" 2>&1 && ok=1
  fi
  local last; last=$(grep -o 'elapsed: [^,]*, execs: [0-9]*' "$out" | tail -1 || true)
  printf '%s\t%s\t%s\t%s\n' "$pkg" "$target" "$([ $ok = 1 ] && echo ok || echo FAILED)" "$last" >>"$log/summary.tsv"
  if [ $ok = 1 ]; then echo "== ok $pkg $target ($last)"; return 0; fi
  tail -30 "$out"; echo "== FAILED: $pkg $target"; return 1
}

fail=0
running=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    if [ -n "${FUZZONLY:-}" ] && ! grep -Eq "$FUZZONLY" <<<"$target"; then continue; fi
    echo "== fuzz $pkg $target for $t"
    one "$pkg" "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || fail=1; running=$((running - 1)); fi
  done
done
while [ "$running" -gt 0 ]; do wait -n || fail=1; running=$((running - 1)); done
echo "== summary in $log/summary.tsv"
column -t -s $'\t' "$log/summary.tsv"
exit $fail
