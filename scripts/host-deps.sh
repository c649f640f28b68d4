#!/usr/bin/env bash
# Checks that this host has the packages banger needs to build and run VMs,
# says which are missing, and installs them through the host's own package
# manager (apt-get or dnf). Used by `make run` and `make deps`.
#
#   scripts/host-deps.sh           check, then install what is missing
#   scripts/host-deps.sh --check   only check; exit 1 when something is missing
set -euo pipefail

mode=install
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if command -v apt-get >/dev/null 2>&1; then
  pm=apt
  # Debian and Ubuntu names. mmdebstrap and uidmap: the default image built
  # by a bangerd that is not root (docs/image-catalog.md).
  pkgs=(qemu-system-x86 e2fsprogs zstd cpio iproute2 nftables openssh-client debootstrap mmdebstrap uidmap ca-certificates make git)
  have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
elif command -v dnf >/dev/null 2>&1; then
  pm=dnf
  pkgs=(qemu-system-x86-core e2fsprogs zstd cpio iproute nftables openssh-clients debootstrap mmdebstrap shadow-utils ca-certificates make git)
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
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    ;;
  dnf)
    "${sudo[@]}" dnf install -y "${missing[@]}"
    ;;
esac
echo "host-deps: done"
