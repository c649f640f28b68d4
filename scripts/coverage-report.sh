#!/usr/bin/env bash
# Prints the average statement coverage per package and the total, from a
# profile written by `go test -coverprofile` (see `make coverage`).
set -euo pipefail
profile=${1:-coverage.out}
go tool cover -func="$profile" | awk '
  /^total:/ { total = $3; next }
  {
    file = $1; sub(/:[0-9.,]+:?$/, "", file)
    pkg = file; sub(/\/[^\/]*$/, "", pkg)
    pct = $NF; sub(/%/, "", pct)
    sum[pkg] += pct; n[pkg]++
  }
  END {
    for (p in sum) printf "%-50s %6.1f%%\n", p, sum[p] / n[p]
    printf "%-50s %6s\n", "total", total
  }' | sort
