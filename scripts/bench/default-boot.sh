#!/usr/bin/env bash
# Measures the cold boot of banger's default image (debian-bookworm) under
# QEMU TCG: `banger vm start` until the guest agent is ready, side by side
# with a bare qemu-system-x86_64 booting the same kernel, initrd, command
# line and (a fresh copy of the) disk to the same point, the boot duties'
# "ready: done" line on the serial console. Runs alternate (banger, bare,
# banger, bare, ...), one image after the other within each round.
#
#   scripts/bench/default-boot.sh [RUNS] ROOTFS [ROOTFS...]   (RUNS default 5)
#
# ROOTFS is the rootfs.ext4 of a debian-bookworm image (`banger image
# inspect debian-bookworm` shows where yours is; `banger image build
# debian-bookworm` makes one); give two to compare images (an old build
# against a new one). Each is copied, never changed.
#
# Needs: build/bin/{banger,bangerd,banger-vsock-agent} (make build),
# qemu-system-x86_64, and the cached Debian kernel package that the e2e
# tests use (~/.cache/banger-test or $BANGER_TEST_CACHE). HOME and
# XDG_RUNTIME_DIR are temporary; nothing of the user's banger is touched.
set -euo pipefail

runs=5
if [[ ${1:-} =~ ^[0-9]+$ ]]; then runs=$1; shift; fi
[ $# -ge 1 ] || { echo "usage: $0 [RUNS] ROOTFS [ROOTFS...]" >&2; exit 2; }
# The goal is measured under TCG: on a host with /dev/kvm, rerun in a
# private mount namespace whose /dev/kvm is /dev/null (the mount never
# leaves that namespace).
if [ -e /dev/kvm ] && [ -z "${BENCH_QEMU_NS:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
    exec env BENCH_QEMU_NS=1 unshare -m --propagation private bash "$0" "$runs" "$@"
  fi
  echo "default-boot: cannot hide /dev/kvm (needs root and unshare); QEMU may use KVM" >&2
fi
if [ -n "${BENCH_QEMU_NS:-}" ]; then
  mount --bind /dev/null /dev/kvm
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/build/bin
say() { echo "default-boot: $*" >&2; }
skip() { printf '\n#### default image cold boot: banger vs bare QEMU\n\nSkipped: %s\n' "$*"; exit 0; }

# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_need qemu-system-x86_64
for f in "$@"; do [ -f "$f" ] || skip "no image file $f"; done
bench_kernel_deb

root=$(mktemp -d /tmp/banger-dboot-XXXXXX)
run=$(mktemp -d /tmp/bgd-XXXXXX)
export HOME=$root/home XDG_RUNTIME_DIR=$run NO_COLOR=1
unset XDG_CONFIG_HOME XDG_STATE_HOME BANGER_CONFIG
qpid=""
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
  "$bin/banger" daemon stop >/dev/null 2>&1 || true
  rm -rf "$root" "$run"
}
trap cleanup EXIT
mkdir -p "$HOME/.config/banger"
# User-mode networking: a benchmark must not set up a bridge or NAT rules.
# The disk is the image's size, so the guest has nothing to grow.
printf 'vmm = "qemu"\nnetwork = "user"\nhosts_file = ""\ndefault_memory = "512MiB"\ndefault_disk_size = "4GiB"\n' >"$HOME/.config/banger/config.toml"
banger() { "$bin/banger" "$@"; }
now() { echo "${EPOCHREALTIME//[.,]/}"; } # microseconds

say "importing kernel $deb"
banger kernel import --name bench-kernel "$deb" >/dev/null
kj=$(banger kernel inspect bench-kernel -o json)
kernel=$(sed -n 's/.*"vmlinux": *"\([^"]*\)".*/\1/p' <<<"$kj" | head -n1)
initrd=$(sed -n 's/.*"initrd": *"\([^"]*\)".*/\1/p' <<<"$kj" | head -n1)
if [ ! -f "$kernel" ] || [ ! -f "$initrd" ]; then skip "could not find the imported kernel's vmlinux and initrd in: $kj"; fi

# bareargs IN OUT DIR: banger's QEMU arguments (one a line) turned into a
# bare command line: the kernel and initrd by path, the console into
# DIR/console.log, the agent port on DIR/agent.sock, the disk DIR/disk.ext4,
# no QMP, no passed file descriptors.
bareargs() {
  awk -v k="$kernel" -v i="$initrd" -v d="$3" '
    skip { skip = 0; next }
    $0 == "-add-fd" || $0 == "-mon" { skip = 1; next }
    $0 == "-chardev" { chardev = 1; next }
    chardev {
      chardev = 0
      if ($0 ~ /^socket,id=qmp/) next
      if ($0 ~ /^file,id=console/) $0 = "file,id=console,path=" d "/console.log"
      else if ($0 ~ /^socket,id=agent/) $0 = "socket,id=agent,path=" d "/agent.sock,server=on,wait=off"
      print "-chardev"; print; next
    }
    prev == "-kernel" { $0 = k }
    prev == "-initrd" { $0 = i }
    prev == "-name" { $0 = "bench-bare" }
    prev == "-drive" { sub(/file=[^,]*/, "file=" d "/disk.ext4") }
    { print; prev = $0 }
  ' "$1" >"$2"
}

declare -a imgs
n=0
for f in "$@"; do
  n=$((n + 1))
  cp --sparse=always "$f" "$root/img$n.ext4"
  banger image register "img$n" --rootfs "$root/img$n.ext4" --kernel bench-kernel >/dev/null
  imgs+=("img$n")
  # Warm-up run: starts the daemon, fills the page cache, and records the
  # QEMU command line banger uses for this image.
  say "warm-up run of img$n ($f)"
  banger vm create "img$n" --name "warm$n" >/dev/null 2>&1
  banger vm start "warm$n" >/dev/null 2>&1 &
  vmstart=$!
  for _ in $(seq 1 3000); do
    for p in $(pgrep -f qemu-system-x86_64 || true); do
      if { tr '\0' '\n' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF "$HOME"; then qpid=$p; break; fi
    done
    [ -n "$qpid" ] && { { tr '\0' '\n' <"/proc/$qpid/cmdline" >"$root/qemu$n.args"; } 2>/dev/null || true; break; }
    sleep 0.02
  done
  qpid=""
  wait "$vmstart" || skip "banger vm start failed in the warm-up run of img$n"
  banger vm rm -f "warm$n" >/dev/null 2>&1
  [ -s "$root/qemu$n.args" ] || skip "could not read the QEMU command line banger used"
  mkdir -p "$root/bare$n"
  bareargs "$root/qemu$n.args" "$root/bare$n.args" "$root/bare$n"
done
say "banger's QEMU: $(tr '\n' ' ' <"$root/qemu1.args" | cut -c1-400)"

# boot_bare N: one bare boot of image N until the console shows the boot
# duties' "ready: done"; prints its milliseconds.
boot_bare() {
  local d=$root/bare$1 t0 t1 args
  rm -f "$d/console.log" "$d/agent.sock"
  cp --sparse=always "$root/img$1.ext4" "$d/disk.ext4"
  sync
  mapfile -t args <"$root/bare$1.args"
  : >"$d/console.log"
  t0=$(now)
  "${args[@]}" </dev/null >"$d/qemu.out" 2>&1 &
  qpid=$!
  until grep -q '^ready: done\|\] ready: done\|ready: done (' "$d/console.log" 2>/dev/null; do
    if ! kill -0 "$qpid" 2>/dev/null; then say "bare QEMU exited: $(tail -3 "$d/qemu.out"); console: $(tail -5 "$d/console.log")"; exit 1; fi
    if [ $((($(now) - t0) / 1000000)) -gt 300 ]; then say "bare boot of img$1 not ready in 300 s"; exit 1; fi
    sleep 0.01
  done
  t1=$(now)
  kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=""
  echo $(((t1 - t0) / 1000))
}

# boot_banger N I: `banger vm start` of a new VM of image N until the agent
# is ready; prints its milliseconds and the VM's QEMU start to ready.
boot_banger() {
  local name=b$1x$2 t0 t1
  banger vm create "img$1" --name "$name" >/dev/null 2>&1
  sync
  t0=$(now)
  banger vm start "$name" >/dev/null 2>&1 || { say "banger vm start $name failed"; exit 1; }
  t1=$(now)
  banger vm rm -f "$name" >/dev/null 2>&1
  echo $(((t1 - t0) / 1000))
}

declare -A res
for i in $(seq 1 "$runs"); do
  for j in $(seq 1 "$n"); do
    say "round $i/$runs, img$j"
    res[banger$j]+=" $(boot_banger "$j" "$i")"
    res[bare$j]+=" $(boot_bare "$j")"
  done
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
minv() { printf '%s\n' "$@" | sort -n | head -n1; }
maxv() { printf '%s\n' "$@" | sort -n | tail -n1; }
printf '\n#### default image cold boot: banger vm start vs bare QEMU to agent ready (TCG, %s runs each, alternated)\n\n' "$runs"
echo "| image | variant | median | min | max | all runs (ms) |"
echo "|---|---|---:|---:|---:|---|"
j=0
for f in "$@"; do
  j=$((j + 1))
  for v in banger bare; do
    read -r -a xs <<<"${res[$v$j]}"
    printf '| img%s (%s) | %s | %s ms | %s ms | %s ms | %s |\n' "$j" "$(basename "$(dirname "$f")")/$(basename "$f")" "$v" \
      "$(median "${xs[@]}")" "$(minv "${xs[@]}")" "$(maxv "${xs[@]}")" "${xs[*]}"
  done
done
j=0
for f in "$@"; do
  j=$((j + 1))
  read -r -a a <<<"${res[banger$j]}"; read -r -a b <<<"${res[bare$j]}"
  declare -a pr=()
  for k in "${!a[@]}"; do pr+=("$(awk -v x="${a[$k]}" -v y="${b[$k]}" 'BEGIN {printf "%d", (x/y-1)*1000}')"); done
  printf '\nimg%s: median of the paired overheads of banger over bare QEMU: %s.\n' "$j" \
    "$(awk -v p="$(median "${pr[@]}")" 'BEGIN {printf "%+.1f%%", p/10}')"
done
# Each image against the first, run by run (both booted in the same round).
for j in $(seq 2 "$n"); do
  for v in banger bare; do
    read -r -a a <<<"${res[$v$j]}"; read -r -a b <<<"${res[${v}1]}"
    declare -a pr=()
    for k in "${!a[@]}"; do pr+=("$(awk -v x="${a[$k]}" -v y="${b[$k]}" 'BEGIN {printf "%d", x/y*1000}')"); done
    printf '\n%s: img%s / img1, median of the paired ratios: %s (min %s, max %s).\n' "$v" "$j" \
      "$(awk -v p="$(median "${pr[@]}")" 'BEGIN {printf "%.2f", p/1000}')" \
      "$(awk -v p="$(minv "${pr[@]}")" 'BEGIN {printf "%.2f", p/1000}')" "$(awk -v p="$(maxv "${pr[@]}")" 'BEGIN {printf "%.2f", p/1000}')"
  done
done
