#!/usr/bin/env bash
# Runs every Go fuzz target in the tree, one after the other, for FUZZTIME
# each (default 30s), with a short minimisation (FUZZMINIMIZETIME, default
# 1s: Go's default of 60s per new input left slow targets running a handful
# of inputs in a whole minute). FUZZ, a regular expression, picks targets
# by name; FUZZPARALLEL sets the workers per target (default: Go's, one per
# core). Prints one line per target with the inputs it ran, and fails when
# any target crashes; go writes the crashing input under the package's
# testdata/fuzz/<Target>/, where `go test` then replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-30s}"
FUZZMINIMIZETIME="${FUZZMINIMIZETIME:-1s}"
FUZZ="${FUZZ:-.}"
FUZZPARALLEL="${FUZZPARALLEL:-}"

# Every "func FuzzX(" in a _test.go file, as "dir target" lines.
test_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -co --exclude-standard -- '*_test.go'
  else
    find . -name '*_test.go' -not -path './build/*' | sed 's#^\./##'
  fi
}
mapfile -t targets < <(
  test_files |
    xargs -r grep -oE '^func Fuzz[A-Za-z0-9_]*\(' /dev/null |
    sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#; s#^[^/ ]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#. \1#' |
    sort -u
)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi

logdir="$(mktemp -d "${TMPDIR:-/tmp}/banger-fuzz.XXXXXX")"
trap 'rm -rf "$logdir"' EXIT

parallel=()
if [ -n "$FUZZPARALLEL" ]; then
  parallel=(-parallel "$FUZZPARALLEL")
fi

# corpus DIR TARGET lists the inputs go has written for TARGET, so a run
# that failed without writing one can be told apart.
corpus() {
  ls -1 "$1/testdata/fuzz/$2" 2>/dev/null || true
}

ran=0
failed=()
echo "fuzz: ${FUZZTIME} per target, minimisation ${FUZZMINIMIZETIME}"
for t in "${targets[@]}"; do
  dir="${t% *}"
  name="${t#* }"
  if ! [[ "$name" =~ $FUZZ ]]; then
    continue
  fi
  ran=$((ran + 1))
  log="$logdir/$name.$ran.log"
  start=$SECONDS
  status=ok
  note=""
  tries=0
  while :; do
    tries=$((tries + 1))
    before="$(corpus "$dir" "$name")"
    if "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
      -fuzzminimizetime "$FUZZMINIMIZETIME" "${parallel[@]}" "./$dir" >"$log" 2>&1; then
      break
    fi
    # Go's fuzz coordinator can fail a sound target with a bare "context
    # deadline exceeded" when -fuzztime runs out while a worker is mid-call
    # (golang/go#75804, fixed in Go 1.27). That failure writes no input;
    # a real one always does. Run such a target once more; a second
    # failure counts.
    if [ "$tries" -lt 2 ] && [ "$(corpus "$dir" "$name")" = "$before" ] &&
      grep -q '^    context deadline exceeded$' "$log" &&
      ! grep -qE '^(panic:|    --- FAIL|    Failing input written)' "$log"; then
      note=" (retried after Go's fuzz deadline race, golang/go#75804)"
      continue
    fi
    status=FAIL
    failed+=("$name ./$dir")
    break
  done
  # The last progress line holds the total, e.g.
  # "fuzz: elapsed: 30s, execs: 123456 (4115/sec), new interesting: ...".
  execs="$(grep -oE 'execs: [0-9]+' "$log" | tail -n 1 | awk '{print $2}' || true)"
  printf '%-4s %-32s %-36s execs=%-10s %ds%s\n' "$status" "$name" "./$dir" "${execs:-?}" "$((SECONDS - start))" "$note"
  if [ "$status" = FAIL ]; then
    sed 's/^/    /' "$log" | tail -n 40
  fi
done

if [ "$ran" -eq 0 ]; then
  echo "fuzz: no target matches FUZZ=$FUZZ" >&2
  exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} of $ran targets failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz: $ran targets ran, none failed"
