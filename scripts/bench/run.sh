#!/usr/bin/env bash
# Runs banger's benchmarks, each against its baseline in the same run, and
# writes the results as Markdown to build/bench/results.md (and stdout).
# See docs/performance.md.
#
#   scripts/bench/run.sh [ITEM...]   items: go bundle oci clone fc kernel copyin qemu
#                                    (default: all but qemu and copyin)
#
# Environment:
#   BENCH_RUNS=N              timed runs of each variant (default 5)
#   BANGER_BENCH_LARGE=1      also run the 1 GiB guest-agent copy-in (copyin)
#   BANGER_BENCH_QEMU=1       also run banger vm run vs bare QEMU (qemu)
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
  [ "${BANGER_BENCH_QEMU:-}" = 1 ] && items+=(qemu)
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
      { echo; echo "#### Guest-agent copy-in of 1 GiB vs raw io.Copy (go test -bench CopyInLarge, -count=$runs)"; echo; echo '```'
        BANGER_BENCH_LARGE=1 timeout -k 10 "$go_timeout" go test -run '^$' -bench 'CopyInLarge' -benchtime=1x -count="$runs" ./internal/guest/client/ 2>&1 |
          grep -E '^(Benchmark|ok|FAIL|---|panic)' || echo "(go test failed or timed out after ${go_timeout}s)"
        echo '```'; } >>"$res" ;;
    qemu)
      scripts/bench/qemu-overhead.sh "$runs" >>"$res" ;;
    *) echo "bench: unknown item $item (want go bundle oci clone fc kernel copyin qemu)" >&2; exit 2 ;;
  esac
done
cat "$res"
echo "bench: wrote $res" >&2
