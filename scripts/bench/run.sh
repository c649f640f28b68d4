#!/usr/bin/env bash
# Runs banger's benchmarks, each against its baseline in the same run, and
# writes the results as Markdown to build/bench/results.md (and stdout).
# See docs/performance.md.
#
#   scripts/bench/run.sh [ITEM...]   items: go bundle oci clone fc kernel copyin qemu
#                                    warm snapshot
#                                    (default: all but copyin, qemu, warm, snapshot)
#
# Environment:
#   BENCH_RUNS=N              timed runs of each variant (default 5)
#   BANGER_BENCH_LARGE=1      also run the 1 GiB guest-agent copy-in (copyin)
#   BANGER_BENCH_QEMU=1       also run the QEMU boots: banger vm run vs bare
#                             QEMU (qemu), the same with the warm pool (warm),
#                             vm snapshot and vm create --from (snapshot)
#   BANGER_TEST_FIRECRACKER   firecracker binary for fc (skipped when unset)
#   BENCH_GO_TIMEOUT=S        bound on each go test run (default 240 s)
#   BANGER_BENCH_KERNEL_DEB   linux-image .deb for kernel (default: the one
#                             the tests cache, fetched with apt-get download)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
runs=${BENCH_RUNS:-5}
go_timeout=${BENCH_GO_TIMEOUT:-240}
out=build/bench
mkdir -p "$out"
res=$out/results.md

items=("$@")
if [ ${#items[@]} -eq 0 ]; then
  items=(go bundle oci clone fc kernel)
  [ "${BANGER_BENCH_LARGE:-}" = 1 ] && items+=(copyin)
  [ "${BANGER_BENCH_QEMU:-}" = 1 ] && items+=(qemu warm snapshot)
fi

{
  echo "# banger benchmark results"
  echo
  echo "- date: $(date -u)"
  echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
  echo "- kernel: $(uname -r)"
  echo "- filesystem of ${TMPDIR:-/tmp}: $(findmnt -n -o FSTYPE -T "${TMPDIR:-/tmp}")"
  echo "- runs per variant: $runs (medians; the machine may be shared)"
} >"$res"

go build -o "$out/benchtool" ./scripts/bench/benchtool

# copyin_bench runs BenchmarkCopyInLarge one variant at a time, alternating
# copy-in and raw (the order swapped every other run), so that both see the
# same machine: `go test -count N` would run N copy-ins, then N raw copies.
# It prints each transport's medians, spread and the median of the paired
# ratios (copy-in against the raw run beside it).
copyin_bench() {
  local tbin=$repo/$out/client.test tr v i line
  go test -c -o "$tbin" ./internal/guest/client/
  echo; echo "#### Guest-agent copy-in of 1 GiB vs raw io.Copy, alternated ($runs runs each)"; echo
  echo "| transport | copy-in median | min–max | raw median | min–max | paired copy-in/raw throughput: median (min–max) |"
  echo "|---|---:|---:|---:|---:|---:|"
  for tr in unix firecracker mux; do
    local -a ci=() rw=()
    for i in $(seq 1 "$runs"); do
      local order=(copy-in raw)
      [ $((i % 2)) = 0 ] && order=(raw copy-in)
      for v in "${order[@]}"; do
        line=$(cd internal/guest/client || exit 1; BANGER_BENCH_LARGE=1 timeout -k 10 "$go_timeout" "$tbin" -test.run '^$' \
          -test.bench "^BenchmarkCopyInLarge/$tr/$v\$" -test.benchtime 1x 2>&1 | grep -m1 '^BenchmarkCopyInLarge') || true
        [ -n "$line" ] || { echo "| $tr | (go test failed or timed out) | | | | |"; continue 3; }
        # ns/op is the field before "ns/op".
        ns=$(awk '{for (k = 2; k <= NF; k++) if ($k == "ns/op") print $(k-1)}' <<<"$line")
        if [ "$v" = copy-in ]; then ci+=("$ns"); else rw+=("$ns"); fi
      done
    done
    awk -v tr="$tr" -v ci="${ci[*]}" -v rw="${rw[*]}" '
      function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
      BEGIN { n = split(ci, c, " "); split(rw, r, " ")
        for (i = 1; i <= n; i++) { p[i] = r[i] / c[i]; c2[i] = c[i]; r2[i] = r[i] }
        mc = med(c2, n); mr = med(r2, n); mp = med(p, n)
        printf "| %s | %.0f ms | %.0f–%.0f ms | %.0f ms | %.0f–%.0f ms | **%.0f%%** (%.0f–%.0f%%) |\n", tr, mc / 1e6, c2[1] / 1e6, c2[n] / 1e6, mr / 1e6, r2[1] / 1e6, r2[n] / 1e6, mp * 100, p[1] * 100, p[n] * 100 }'
  done
}
for item in "${items[@]}"; do
  echo "bench: $item" >&2
  case $item in
    go)
      { echo; echo "#### Go micro-benchmarks (go test -bench, -count=$runs)"; echo; echo '```'
        # Go does not time out benchmarks: bound the whole run instead.
        env -u BANGER_BENCH_LARGE timeout -k 10 "$go_timeout" go test -run '^$' -bench . -benchmem -count="$runs" ./... 2>&1 |
          grep -E '^(Benchmark|FAIL|---|panic)|^ok .*[1-9][0-9]*\.[0-9]+s$' || echo "(go test failed or timed out after ${go_timeout}s)"
        echo '```'; } >>"$res" ;;
    bundle|oci|clone|fc|kernel)
      "$out/benchtool" -runs "$runs" "$item" >>"$res" ;;
    copyin)
      copyin_bench >>"$res" ;;
    qemu)
      scripts/bench/qemu-overhead.sh "$runs" >>"$res" ;;
    warm)
      BENCH_WARM=1 scripts/bench/qemu-overhead.sh "$runs" >>"$res" ;;
    snapshot)
      scripts/bench/snapshot.sh "$runs" >>"$res" ;;
    *) echo "bench: unknown item $item (want go bundle oci clone fc kernel copyin qemu warm snapshot)" >&2; exit 2 ;;
  esac
done
cat "$res"
echo "bench: wrote $res" >&2
