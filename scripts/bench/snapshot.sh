#!/usr/bin/env bash
# Measures banger's snapshot paths under QEMU TCG, end to end through the
# CLI: `banger vm snapshot` of a running 512 MiB VM (pause, save memory and
# devices, freeze the disks, resume) and `banger vm create --from SNAP` (a
# new VM, resumable by `vm start`), with the state dir on a reflink
# filesystem (XFS with reflink=1 on a loop file, as root) and on the
# filesystem of /tmp, in two banger envs side by side. Runs alternate: each
# round snapshots and clones in both envs, the env that goes first
# swapping every round.
#
#   scripts/bench/snapshot.sh [RUNS]     (default 5; prints Markdown)
#
# Needs: build/bin/{banger,bangerd,banger-vsock-agent} (make build),
# qemu-system-x86_64, busybox-static, openssh-server, debugfs, mkfs.xfs
# (xfsprogs; without it or without root only the /tmp env runs), and the
# cached Debian kernel package that the e2e tests use (~/.cache/banger-test
# or $BANGER_TEST_CACHE). HOME and XDG_RUNTIME_DIR are temporary; nothing
# of the user's banger is touched.
set -euo pipefail

runs=${1:-5}
if [ -e /dev/kvm ] && [ -z "${BENCH_QEMU_NS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
  # TCG, as the goal is stated: /dev/kvm is hidden in a private mount
  # namespace (which also keeps the loop mount out of the host's).
  exec env BENCH_QEMU_NS=1 unshare -m --propagation private bash "$0" "$@"
fi
if [ -n "${BENCH_QEMU_NS:-}" ]; then
  mount --bind /dev/null /dev/kvm
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/build/bin
say() { echo "snapshot-bench: $*" >&2; }
skip() { printf '\n#### vm snapshot and vm create --from\n\nSkipped: %s\n' "$*"; exit 0; }

# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_need qemu-system-x86_64 debugfs mkfs.ext4 busybox
bench_kernel_deb

root=$(mktemp -d /tmp/banger-sbench-XXXXXX)
envs=(plain)
cleanup() {
  local e
  # The VMs first: they outlive their daemon, and would keep the XFS busy.
  for e in "${envs[@]}"; do
    in_env "$e" vm rm -f src >/dev/null 2>&1 || true
    in_env "$e" daemon stop >/dev/null 2>&1 || true
  done
  if mountpoint -q "$root/xfs" 2>/dev/null; then umount "$root/xfs" || true; fi
  rm -rf "$root"
}
trap cleanup EXIT

# in_env ENV ARGS...: banger in the env ENV (its own HOME, runtime dir,
# daemon and state dir).
in_env() { local e=$1; shift; HOME=$root/$e/home XDG_RUNTIME_DIR=$root/$e/run NO_COLOR=1 "$bin/banger" "$@"; }
now() { echo "${EPOCHREALTIME//[.,]/}"; } # microseconds
unset XDG_CONFIG_HOME XDG_STATE_HOME BANGER_CONFIG

if [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null 2>&1; then
  mkdir -p "$root/xfs"
  truncate -s 8G "$root/xfs.img"
  if mkfs.xfs -q -m reflink=1 "$root/xfs.img" && mount -o loop "$root/xfs.img" "$root/xfs"; then
    envs=(reflink plain)
  else
    say "could not make the XFS loop filesystem; measuring /tmp's filesystem only"
  fi
else
  say "no root or no mkfs.xfs: measuring /tmp's filesystem ($(stat -f -c %T /tmp)) only"
fi

bash "$repo/scripts/make-test-image.sh" "$root/test.ext4" "$bin/banger-vsock-agent" 192 >/dev/null
for e in "${envs[@]}"; do
  mkdir -p "$root/$e/home/.config/banger" "$root/$e/run"
  chmod 700 "$root/$e/run"
  state=$root/$e/state
  [ "$e" = reflink ] && state=$root/xfs/state
  printf 'vmm = "qemu"\nnetwork = "user"\nhosts_file = ""\nwarm = 0\ndefault_memory = "512MiB"\ndefault_disk_size = "1GiB"\nstate_dir = "%s"\n' "$state" \
    >"$root/$e/home/.config/banger/config.toml"
  say "$e: importing the kernel, registering the test image, starting a 512 MiB VM"
  in_env "$e" kernel import --name bench-kernel "$deb" >/dev/null
  cp --sparse=always "$root/test.ext4" "$root/$e/test.ext4"
  in_env "$e" image register bench --rootfs "$root/$e/test.ext4" --kernel bench-kernel >/dev/null
  in_env "$e" vm create bench --name src >/dev/null
  in_env "$e" vm start src >/dev/null
  # 64 MiB written into the guest's page cache: the saved memory holds more
  # than a freshly booted kernel.
  in_env "$e" vm exec src -- dd if=/dev/urandom of=/root/fill bs=1M count=64 >/dev/null 2>&1 ||
    say "$e: could not write 64 MiB in the guest; its memory is a freshly booted one"
done

declare -A snap clone
for i in $(seq 1 "$runs"); do
  say "run $i/$runs"
  order=("${envs[@]}")
  if [ $((i % 2)) = 0 ] && [ ${#envs[@]} = 2 ]; then order=("${envs[1]}" "${envs[0]}"); fi
  for e in "${order[@]}"; do
    sync
    t0=$(now)
    in_env "$e" -q vm snapshot src --name "s$i" >/dev/null
    t1=$(now)
    in_env "$e" -q vm create --from "s$i" --name "c$i" >/dev/null
    t2=$(now)
    snap[$e]+="$(((t1 - t0) / 1000)) "
    clone[$e]+="$(((t2 - t1) / 1000)) "
    if [ "$i" = 1 ]; then
      in_env "$e" snapshot ls -o json >"$root/$e/snap.json"
    fi
    in_env "$e" vm rm -f "c$i" >/dev/null
    in_env "$e" snapshot rm "s$i" >/dev/null
  done
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
minv() { printf '%s\n' "$@" | sort -n | head -n1; }
maxv() { printf '%s\n' "$@" | sort -n | tail -n1; }
row() {
  # shellcheck disable=SC2086 # the lists are space-separated numbers
  printf '| %s | %s ms | %s ms | %s ms | %s |\n' "$1" "$(median $2)" "$(minv $2)" "$(maxv $2)" "$2"
}
printf '\n#### vm snapshot of a running 512 MiB VM and vm create --from (QEMU TCG, %s runs, envs alternated)\n\n' "$runs"
echo "| what | median | min | max | all (ms) |"
echo "|---|---:|---:|---:|---|"
for e in "${envs[@]}"; do
  fs="$(findmnt -no FSTYPE -T "$root"), copy"
  [ "$e" = reflink ] && fs="xfs, reflink=1"
  row "\`vm snapshot\` ($fs)" "${snap[$e]}"
  row "\`vm create --from\` ($fs)" "${clone[$e]}"
done
for e in "${envs[@]}"; do
  size=$(tr -d ' \n' <"$root/$e/snap.json" | grep -o '"size_bytes":[0-9]*' | head -n1 | cut -d: -f2)
  printf '\nSnapshot size on disk (%s): %s MiB.' "$e" "$((${size:-0} >> 20))"
done
echo
