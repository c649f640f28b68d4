#!/usr/bin/env bash
# Measures banger's overhead on `banger vm run --rm -- true` under QEMU TCG
# against a bare qemu-system-x86_64 booting the same kernel, initrd and
# (a copy of the) disk to the same point, the guest running `true`, ended
# two ways: the guest powers off (poweroff -f), or, as `--rm` does, the
# host kills QEMU (SIGKILL) once the guest has said `true` ran. The three
# variants alternate run by run.
#
#   scripts/bench/qemu-overhead.sh [RUNS]     (default 5; prints Markdown)
#   BENCH_WARM=1 scripts/bench/qemu-overhead.sh [RUNS]
#
# BENCH_WARM=1 adds a fourth variant: `banger vm run --rm -- true` resumed
# from the warm pool (warm = 1). The same test image is registered twice,
# as `bench` and as the default image `bench-warm`, so `vm run bench` still
# boots cold with the same bytes and shape, and `vm run` resumes a clone of
# the warm snapshot; a run that did not resume stops the benchmark.
#
# Each banger run is also split into phases from its progress lines, stamped
# as they arrive. Off a terminal the CLI prints a phase's line when the
# phase is over, so each stamp is the end of its phase: create and QEMU
# start (until the "starting qemu" line), boot until the guest agent is
# ready (until the "waiting for the guest agent" line), and exec plus
# removal (from the operation's "succeeded" line to the end).
#
# Needs: build/bin/{banger,bangerd,banger-vsock-agent} (make build),
# qemu-system-x86_64, busybox-static, openssh-server, debugfs, and the cached
# Debian kernel package that the e2e tests use (~/.cache/banger-test or
# $BANGER_TEST_CACHE). HOME and XDG_RUNTIME_DIR are temporary; nothing of the
# user's banger is touched.
set -euo pipefail

runs=${1:-5}
# The goal is measured under TCG: on a host with KVM, rerun this script in a
# private mount namespace whose /dev/kvm is /dev/null, so that banger (which
# picks KVM when it can) and the bare QEMU both use TCG. BENCH_QEMU_ACCEL=kvm
# keeps KVM.
if [ "${BENCH_QEMU_ACCEL:-tcg}" = tcg ] && [ -e /dev/kvm ] && [ -z "${BENCH_QEMU_NS:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
    exec env BENCH_QEMU_NS=1 unshare -m --propagation private bash "$0" "$@"
  fi
  echo "qemu-overhead: cannot hide /dev/kvm (needs root and unshare); measuring with KVM" >&2
fi
if [ -n "${BENCH_QEMU_NS:-}" ]; then
  mount --bind /dev/null /dev/kvm
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/build/bin
say() { echo "qemu-overhead: $*" >&2; }
skip() { printf '\n#### banger vm run vs bare QEMU\n\nSkipped: %s\n' "$*"; exit 0; }

# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_need qemu-system-x86_64 debugfs mkfs.ext4 busybox
bench_kernel_deb

root=$(mktemp -d /tmp/banger-qbench-XXXXXX)
run=$(mktemp -d /tmp/bgq-XXXXXX)
export HOME=$root/home XDG_RUNTIME_DIR=$run NO_COLOR=1
unset XDG_CONFIG_HOME XDG_STATE_HOME BANGER_CONFIG
cleanup() {
  "$bin/banger" daemon stop >/dev/null 2>&1 || true
  rm -rf "$root" "$run"
}
trap cleanup EXIT
mkdir -p "$HOME/.config/banger"
# User-mode networking: a benchmark must not set up a bridge, NAT rules or
# ip_forward on the host it runs on (as root, network = auto would).
printf 'vmm = "qemu"\nnetwork = "user"\nhosts_file = ""\ndefault_memory = "512MiB"\ndefault_disk_size = "1GiB"\n' >"$HOME/.config/banger/config.toml"
warm=${BENCH_WARM:-0}
if [ "$warm" = 1 ]; then
  printf 'warm = 1\ndefault_image_name = "bench-warm"\n' >>"$HOME/.config/banger/config.toml"
else
  printf 'warm = 0\n' >>"$HOME/.config/banger/config.toml"
fi
banger() { "$bin/banger" "$@"; }

say "importing kernel $deb"
banger kernel import --name bench-kernel "$deb" >/dev/null
banger kernel inspect bench-kernel -o json >"$root/kernel.json"
say "building test image"
bash "$repo/scripts/make-test-image.sh" "$root/test.ext4" "$bin/banger-vsock-agent" 192 >/dev/null
banger image register bench --rootfs "$root/test.ext4" --kernel bench-kernel >/dev/null
if [ "$warm" = 1 ]; then
  cp --sparse=always "$root/test.ext4" "$root/warm.ext4"
  banger image register bench-warm --rootfs "$root/warm.ext4" --kernel bench-kernel >/dev/null
fi

# The bare image: the same tree whose init mounts /proc, runs true and
# powers off at once.
cp --sparse=always "$root/test.ext4" "$root/bare.ext4"
printf '#!/bin/sh\nmount -t proc proc /proc\ntrue\npoweroff -f\n' >"$root/init.bare"
debugfs -w -R "rm /sbin/init" "$root/bare.ext4" >/dev/null 2>&1
debugfs -w -R "write $root/init.bare /sbin/init" "$root/bare.ext4" >/dev/null 2>&1
debugfs -w -R "sif /sbin/init mode 0100755" "$root/bare.ext4" >/dev/null 2>&1
# The bare image ended by the host: init says `true` ran, on the console,
# and waits to be killed.
cp --sparse=always "$root/test.ext4" "$root/bare-kill.ext4"
printf '#!/bin/sh\nmount -t proc proc /proc\ntrue && echo BENCH-TRUE-DONE\nwhile :; do sleep 1000; done\n' >"$root/init.kill"
debugfs -w -R "rm /sbin/init" "$root/bare-kill.ext4" >/dev/null 2>&1
debugfs -w -R "write $root/init.kill /sbin/init" "$root/bare-kill.ext4" >/dev/null 2>&1
debugfs -w -R "sif /sbin/init mode 0100755" "$root/bare-kill.ext4" >/dev/null 2>&1

# Warm-up run (starts the daemon, fills the page cache) that also records
# the QEMU command line banger uses, so the bare run gets the same kernel
# command line, -m, -smp and -cpu.
say "warm-up run"
banger vm run bench --rm -- true >/dev/null 2>&1 &
vmrun=$!
qpid=""
for _ in $(seq 1 3000); do
  for p in $(pgrep -f qemu-system-x86_64 || true); do
    if { tr '\0' '\n' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF "$HOME"; then qpid=$p; break; fi
  done
  [ -n "$qpid" ] && { { tr '\0' '\n' <"/proc/$qpid/cmdline" >"$root/qemu.args"; } 2>/dev/null || true; break; }
  sleep 0.02
done
wait "$vmrun" || skip "banger vm run --rm -- true failed in the warm-up run"
[ -s "$root/qemu.args" ] || skip "could not read the QEMU command line banger used"
if [ "$warm" = 1 ]; then
  # A cold run of the default image makes the pool save its snapshot in
  # the background; wait until it is ready.
  say "warm pool: cold run of the default image, then waiting for the warm snapshot"
  banger vm run --rm -- true >/dev/null 2>&1 || skip "banger vm run --rm -- true of the default image failed"
  for _ in $(seq 1 600); do
    banger snapshot ls -o json 2>/dev/null | tr -d ' \n' | grep -q '"state":"ready","warm":true' && break
    sleep 0.5
  done
  banger snapshot ls -o json 2>/dev/null | tr -d ' \n' | grep -q '"state":"ready","warm":true' ||
    skip "no warm snapshot within 5 minutes: $(banger snapshot ls 2>&1 | tail -3)"
fi

# banger hands QEMU open files and sockets: the console log and the disk
# through -add-fd (then /dev/fdset/N), the QMP and agent sockets as fd=N.
# The bare run has no such descriptors, so it opens the same files by path
# (each fd's opaque tag) and listens on sockets of its own directory.
sedfd=(-E -e 's#^socket,id=([a-z0-9]+),fd=[0-9]+,#socket,id=\1,path=@BAREDIR@/\1.sock,#')
while IFS= read -r l; do
  n=$(sed -n 's/.*set=\([0-9]*\).*/\1/p' <<<"$l"); op=$(sed -n 's/.*opaque=\([^,]*\).*/\1/p' <<<"$l")
  if [ -n "$n" ] && [ -n "$op" ]; then sedfd+=(-e "s#/dev/fdset/$n(,|\$)#$op\\1#"); fi
done < <(awk 'prev == "-add-fd" {print} {prev = $0}' "$root/qemu.args")
# The kernel and initrd come as /proc/self/fd/N too: take their paths from
# the imported kernel's record.
kpath=$(grep -o '"/[^"]*/vmlinux"' "$root/kernel.json" | head -n1 | tr -d '"')
ipath=$(grep -o '"/[^"]*/initrd.img"' "$root/kernel.json" | head -n1 | tr -d '"')
[ -n "$kpath" ] || skip "no vmlinux path in banger kernel inspect's output"
awk -v k="$kpath" -v i="$ipath" 'skip {skip = 0; next} $0 == "-add-fd" {skip = 1; next}
  prev == "-kernel" {$0 = k} prev == "-initrd" && i != "" {$0 = i} {prev = $0; print}' "$root/qemu.args" | sed "${sedfd[@]}" >"$root/qemu.plain"
get() { awk -v k="$1" 'p {print; exit} $0 == k {p=1}' "$root/qemu.plain"; }
append=$(get -append); mem=$(get -m); smp=$(get -smp); cpu=$(get -cpu); accel=$(get -accel); machine=$(get -M)
say "banger's QEMU: -M $machine -accel $accel -cpu $cpu -smp $smp -m $mem"
say "kernel command line: $append"
# The bare run is banger's own command line with the VM's directory (console
# log, QMP and agent sockets, root disk) swapped for ours and the disk for the
# bare image: same kernel, initrd, command line, machine and devices.
console=$(sed -n 's/^file,id=console,path=\([^,]*\).*/\1/p' "$root/qemu.plain")
vmdir=$(dirname "$console")
disk=$(sed -n 's/^id=vd0,file=\([^,]*\),.*/\1/p' "$root/qemu.plain")
if [ -z "$console" ] || [ -z "$disk" ]; then skip "could not find the console log and root disk in banger's QEMU command line"; fi
baredir=$root/bare
mkdir -p "$baredir"
mapfile -t bare < <(sed -e "s|$disk|$baredir/disk.ext4|g" -e "s|$vmdir|$baredir|g" -e "s|@BAREDIR@|$baredir|g" "$root/qemu.plain")
mapfile -t barekill < <(sed -e "s|$disk|$baredir/disk-kill.ext4|g" -e "s|$vmdir|$baredir|g" -e "s|@BAREDIR@|$baredir|g" "$root/qemu.plain")
cp --sparse=always "$root/bare.ext4" "$baredir/disk.ext4"
cp --sparse=always "$root/bare-kill.ext4" "$baredir/disk-kill.ext4"
bareconsole=$baredir/$(basename "$console")
# bare_kill: start QEMU, wait (inotify, through tail -F) until the console
# shows that `true` ran, SIGKILL QEMU and reap it.
bare_kill() {
  # An empty console that exists before tail starts: tail -F then follows
  # it by inotify, where a file that is missing at first is polled (once a
  # second by default; -s bounds that too).
  : >"$bareconsole"
  "${barekill[@]}" </dev/null >"$root/bare-kill.out" 2>&1 &
  local q=$! fd tp g ok=0
  # A process substitution, not a pipe: tail never writes again once QEMU
  # is dead, so a pipeline would wait for it.
  exec {fd}< <(exec timeout 300 tail -s 0.01 -n +1 -F "$bareconsole" 2>/dev/null)
  tp=$!
  grep -q -m1 BENCH-TRUE-DONE <&"$fd" &
  g=$!
  wait -n "$q" "$g" || true
  if kill -0 "$q" 2>/dev/null; then
    wait "$g" || ok=1
  else
    ok=1 # QEMU ended before the guest said `true` ran
    kill "$g" 2>/dev/null || true
  fi
  kill -9 "$q" 2>/dev/null || true
  wait "$q" 2>/dev/null || true
  kill "$tp" 2>/dev/null || true
  exec {fd}<&-
  return "$ok"
}

# Nanoseconds (microseconds of EPOCHREALTIME; its decimal point may be a
# comma in some locales). Call it as $(now) where a fork does not matter.
now() { echo "${EPOCHREALTIME//[.,]/}000"; }
# stamp prefixes each line of its input with the time it arrived, without
# forking per line (a fork would delay the stamps).
stamp() { local l; while IFS= read -r l; do printf '%s000 %s\n' "${EPOCHREALTIME//[.,]/}" "$l"; done; }
# phase FILE T0 PATTERN: milliseconds from T0 to the first progress line
# matching PATTERN.
phase() { awk -v t0="$2" -v p="$3" '$0 ~ p {printf "%d", ($1 - t0) / 1000000; exit}' "$1"; }
declare -a tb tq tk tw pc ps pe
# warm_run: one `vm run --rm -- true` of the default image, which must
# resume the warm snapshot (its progress says the clone got its identity).
warm_run() {
  local t0 t1
  sync
  t0=$(now)
  banger vm run --rm -- true 2>"$root/warm.progress" >/dev/null || { say "warm banger vm run failed: $(tail -3 "$root/warm.progress")"; exit 1; }
  t1=$(now)
  grep -q 'own identity' "$root/warm.progress" || { say "a warm-pool run booted cold: $(tail -3 "$root/warm.progress")"; exit 1; }
  tw+=($(((t1 - t0) / 1000000)))
}
for i in $(seq 1 "$runs"); do
  say "run $i/$runs"
  # The bare run ended by SIGKILL goes first on odd runs and last on even
  # ones, so that no variant always follows the same one.
  if [ $((i % 2)) = 1 ]; then
    sync; rm -f "$baredir"/*.sock
    t0=$(now); bare_kill || { say "bare QEMU (killed) failed: $(tail -5 "$root/bare-kill.out")"; exit 1; }; t1=$(now)
    tk+=($(((t1 - t0) / 1000000)))
  fi
  if [ "$warm" = 1 ] && [ $((i % 2)) = 1 ]; then warm_run; fi
  sync
  # The progress lines (stderr) are stamped as they arrive, to split the
  # run into phases.
  t0=$(now)
  banger vm run bench --rm -- true 2>&1 >/dev/null | stamp >"$root/progress" || { say "banger vm run failed: $(tail -3 "$root/progress")"; exit 1; }
  t1=$(now)
  tb+=($(((t1 - t0) / 1000000)))
  c=$(phase "$root/progress" "$t0" 'starting qemu'); s=$(phase "$root/progress" "$t0" 'waiting for the guest agent')
  r=$(phase "$root/progress" "$t0" 'succeeded')
  if [ -n "$c" ] && [ -n "$s" ] && [ -n "$r" ]; then
    pc+=("$c"); ps+=($((s - c))); pe+=($((tb[-1] - r)))
  fi
  sync
  rm -f "$baredir"/*.sock
  t0=$(now); timeout 300 "${bare[@]}" </dev/null >"$root/bare.out" 2>&1 || { say "bare QEMU failed: $(tail -5 "$root/bare.out"); console: $(tail -5 "$baredir/$(basename "$console")")"; exit 1; }; t1=$(now)
  tq+=($(((t1 - t0) / 1000000)))
  if [ $((i % 2)) = 0 ]; then
    sync; rm -f "$baredir"/*.sock
    t0=$(now); bare_kill || { say "bare QEMU (killed) failed: $(tail -5 "$root/bare-kill.out")"; exit 1; }; t1=$(now)
    tk+=($(((t1 - t0) / 1000000)))
  fi
  if [ "$warm" = 1 ] && [ $((i % 2)) = 0 ]; then warm_run; fi
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
minv() { printf '%s\n' "$@" | sort -n | head -n1; }
maxv() { printf '%s\n' "$@" | sort -n | tail -n1; }
mb=$(median "${tb[@]}"); mq=$(median "${tq[@]}")
printf '\n#### banger vm run --rm -- true vs bare QEMU (%s, -smp %s -m %s, %s runs each, interleaved, daemon warm)\n\n' "$accel" "$smp" "$mem" "$runs"
echo "| variant | runs | median | min | max | overhead vs bare |"
echo "|---|---:|---:|---:|---:|---:|"
printf '| banger vm run --rm -- true | %s | %s ms | %s ms | %s ms | %s |\n' "$runs" "$mb" "$(minv "${tb[@]}")" "$(maxv "${tb[@]}")" \
  "$(awk -v a="$mb" -v b="$mq" 'BEGIN {printf "%+.0f%%", (a/b-1)*100}')"
printf '| bare qemu-system-x86_64 (init: true; poweroff -f) | %s | %s ms | %s ms | %s ms | — |\n' "$runs" "$mq" "$(minv "${tq[@]}")" "$(maxv "${tq[@]}")"
mk=$(median "${tk[@]}")
printf '| bare qemu-system-x86_64 (init: true; host SIGKILLs QEMU, as --rm) | %s | %s ms | %s ms | %s ms | banger %s |\n' "$runs" "$mk" "$(minv "${tk[@]}")" "$(maxv "${tk[@]}")" \
  "$(awk -v a="$mb" -v b="$mk" 'BEGIN {printf "%+.0f%%", (a/b-1)*100}')"
printf '\nAll banger runs (ms): %s. All bare runs, poweroff (ms): %s. All bare runs, killed (ms): %s.\n' "${tb[*]}" "${tq[*]}" "${tk[*]}"
# Each banger run is paired with the bare run right after it, so that a
# machine getting slower or faster during the runs affects both alike.
declare -a pr_
for i in "${!tb[@]}"; do pr_+=("$(awk -v a="${tb[$i]}" -v b="${tq[$i]}" 'BEGIN {printf "%d", (a/b-1)*1000}')"); done
printf '\nMedian of the paired overheads (each banger run against the bare run after it): %s.\n' \
  "$(awk -v p="$(median "${pr_[@]}")" 'BEGIN {printf "%+.1f%%", p/10}')"
declare -a pk_
for i in "${!tb[@]}"; do pk_+=("$(awk -v a="${tb[$i]}" -v b="${tk[$i]}" 'BEGIN {printf "%d", (a/b-1)*1000}')"); done
printf 'Median of the paired overheads against the bare run ended by SIGKILL (same iteration): %s.\n' \
  "$(awk -v p="$(median "${pk_[@]}")" 'BEGIN {printf "%+.1f%%", p/10}')"
if [ "$warm" = 1 ]; then
  mw=$(median "${tw[@]}")
  printf '\n#### banger vm run --rm -- true from the warm pool (same runs, interleaved)\n\n'
  echo "| variant | runs | median | min | max |"
  echo "|---|---:|---:|---:|---:|"
  printf '| warm: a clone of the warm snapshot | %s | %s ms | %s ms | %s ms |\n' "$runs" "$mw" "$(minv "${tw[@]}")" "$(maxv "${tw[@]}")"
  printf '| cold: banger, same image bytes and shape | %s | %s ms | %s ms | %s ms |\n' "$runs" "$mb" "$(minv "${tb[@]}")" "$(maxv "${tb[@]}")"
  printf '| bare QEMU, ended by SIGKILL | %s | %s ms | %s ms | %s ms |\n' "$runs" "$mk" "$(minv "${tk[@]}")" "$(maxv "${tk[@]}")"
  printf '| bare QEMU, guest poweroff | %s | %s ms | %s ms | %s ms |\n' "$runs" "$mq" "$(minv "${tq[@]}")" "$(maxv "${tq[@]}")"
  # Paired ratios: each warm run against the cold and bare runs of its round.
  declare -a rb_ rk_ rq_
  for i in "${!tw[@]}"; do
    rb_+=("$(awk -v a="${tb[$i]}" -v b="${tw[$i]}" 'BEGIN {printf "%d", a/b*100}')")
    rk_+=("$(awk -v a="${tk[$i]}" -v b="${tw[$i]}" 'BEGIN {printf "%d", a/b*100}')")
    rq_+=("$(awk -v a="${tq[$i]}" -v b="${tw[$i]}" 'BEGIN {printf "%d", a/b*100}')")
  done
  x() { awk -v p="$1" 'BEGIN {printf "%.1fx", p/100}'; }
  printf '\nPaired per round (median, min-max): cold banger / warm %s (%s-%s); bare killed / warm %s (%s-%s); bare poweroff / warm %s (%s-%s).\n' \
    "$(x "$(median "${rb_[@]}")")" "$(x "$(minv "${rb_[@]}")")" "$(x "$(maxv "${rb_[@]}")")" \
    "$(x "$(median "${rk_[@]}")")" "$(x "$(minv "${rk_[@]}")")" "$(x "$(maxv "${rk_[@]}")")" \
    "$(x "$(median "${rq_[@]}")")" "$(x "$(minv "${rq_[@]}")")" "$(x "$(maxv "${rq_[@]}")")"
  printf 'All warm runs (ms): %s.\n' "${tw[*]}"
fi
if [ ${#pc[@]} -gt 0 ]; then
  printf '\nPhases of the banger runs, from its progress lines (median ms): create and QEMU start %s, boot until the agent is ready %s, exec and removal %s.\n' \
    "$(median "${pc[@]}")" "$(median "${ps[@]}")" "$(median "${pe[@]}")"
fi
