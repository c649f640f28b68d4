#!/usr/bin/env bash
# Checks that this host has the packages banger needs to build and run VMs,
# says which are missing, and installs them through the host's own package
# manager (apt-get or dnf). Used by `make run` and `make deps`.
#
#   scripts/host-deps.sh           check, then install what is missing
#   scripts/host-deps.sh --check   only check; exit 1 when something is missing
#
# When another apt or dpkg runs (unattended-upgrades, a second terminal), it
# waits for their locks, saying so, instead of failing: at most
# HOST_DEPS_LOCK_WAIT seconds (default 600). HOST_DEPS_LOCKS names the lock
# files to watch (tests point it at their own).
set -euo pipefail

lock_wait=${HOST_DEPS_LOCK_WAIT:-600}
# A wait that is not a whole number of seconds ("10m") would make every
# comparison below fail, and the wait never end.
case $lock_wait in
  '' | *[!0-9]*)
    echo "host-deps: HOST_DEPS_LOCK_WAIT=$lock_wait is not a number of seconds (e.g. 600)" >&2
    exit 2
    ;;
esac
read -r -a locks <<<"${HOST_DEPS_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock}"

# lock_holder FILE prints the pid of a process holding a lock on FILE, of
# either kind (fcntl, which apt and dpkg take, or flock), and fails when
# none does. /proc/locks names files by device and inode; the inode alone is
# matched, since the device it prints differs from stat's on some file
# systems (btrfs), and a false match only makes us wait.
lock_holder() {
  local ino
  [ -e "$1" ] || return 1
  ino=$(stat -L -c %i "$1" 2>/dev/null) || return 1
  awk -v ino="$ino" '{
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^[0-9a-f]+:[0-9a-f]+:[0-9]+$/) {
        n = split($i, f, ":")
        if (f[n] == ino) { print $(i - 1); found = 1; exit }
      }
    }
  } END { exit !found }' /proc/locks
}

# wait_for_locks waits until no package manager holds a lock, for at most
# lock_wait seconds, and fails saying who holds it when that is not enough.
wait_for_locks() {
  local start now lock pid who said=""
  start=$(date +%s)
  while :; do
    pid=""
    for lock in "${locks[@]}"; do
      if pid=$(lock_holder "$lock"); then
        break
      fi
      pid=""
    done
    [ -z "$pid" ] && return 0
    who=$(cat "/proc/$pid/comm" 2>/dev/null || echo "a process")
    now=$(date +%s)
    if [ $((now - start)) -ge "$lock_wait" ]; then
      echo "host-deps: $who (pid $pid) still holds $lock after ${lock_wait}s; let it finish (or stop it) and run this again, or set HOST_DEPS_LOCK_WAIT to wait longer" >&2
      return 1
    fi
    if [ "$said" != "$pid $lock" ]; then
      echo "host-deps: another package manager is running: $who (pid $pid) holds $lock; waiting for it (at most ${lock_wait}s)"
      said="$pid $lock"
    fi
    sleep 1
  done
}

mode=install
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if command -v apt-get >/dev/null 2>&1; then
  pm=apt
  # Debian and Ubuntu names. mmdebstrap and uidmap: the default image built
  # by a bangerd that is not root (docs/image-catalog.md). shellcheck: make
  # lint, beside make and git.
  pkgs=(qemu-system-x86 e2fsprogs zstd cpio iproute2 nftables openssh-client debootstrap mmdebstrap uidmap ca-certificates make git shellcheck)
  have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
elif command -v dnf >/dev/null 2>&1; then
  pm=dnf
  pkgs=(qemu-system-x86-core e2fsprogs zstd cpio iproute nftables openssh-clients debootstrap mmdebstrap shadow-utils ca-certificates make git ShellCheck)
  have() { rpm -q "$1" >/dev/null 2>&1; }
else
  echo "host-deps: no apt-get or dnf here; install by hand: QEMU (x86_64 system emulator), e2fsprogs, zstd, cpio, iproute2, nftables, an SSH client, debootstrap, mmdebstrap and newuidmap/newgidmap" >&2
  exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
  have "$p" || missing+=("$p")
done

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "host-deps: Go is not installed; banger needs the Go version named in go.mod (see https://go.dev/doc/install)." >&2
  echo "           Distribution packages of Go are often older than that." >&2
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "host-deps: all host packages present"
  exit 0
fi
echo "host-deps: missing packages: ${missing[*]}"
if [ "$mode" = check ]; then
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "host-deps: not root and no sudo: install the packages above as root" >&2
    exit 1
  fi
  sudo=(sudo)
fi
echo "host-deps: installing them with $pm"
case $pm in
  apt)
    wait_for_locks
    # apt's own lock timeout covers one starting between the check and us.
    apt_wait=(-o "DPkg::Lock::Timeout=$lock_wait")
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" update -qq
    wait_for_locks
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -qq "${missing[@]}"
    ;;
  dnf)
    "${sudo[@]}" dnf install -y "${missing[@]}"
    ;;
esac
echo "host-deps: done"
