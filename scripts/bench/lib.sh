# shellcheck shell=bash
# shellcheck disable=SC2154 # bin is the sourcing script's
# Shared by the VM benchmarks (qemu-overhead.sh, snapshot.sh,
# default-boot.sh), sourced after the script has set bin (build/bin) and
# defined skip MESSAGE (print why and exit 0).

# bench_need TOOL...: skip unless every TOOL is on PATH and banger's three
# binaries are built.
bench_need() {
  local t b
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
  done
  for b in banger bangerd banger-vsock-agent; do
    [ -x "$bin/$b" ] || skip "$bin/$b is missing (run make build)"
  done
}

# bench_kernel_deb sets deb to the Debian kernel package the e2e tests
# cache, or skips.
bench_kernel_deb() {
  local cache=${BANGER_TEST_CACHE:-$HOME/.cache/banger-test}
  # A missing cache fails find, and with pipefail the assignment: that is
  # a skip, not an exit.
  deb=$(find "$cache" -maxdepth 1 -name 'linux-image-*_amd64.deb' 2>/dev/null | sort | tail -n1) || deb=""
  [ -n "$deb" ] || skip "no cached Debian kernel package in $cache (run the e2e tests once: make e2e)"
}
