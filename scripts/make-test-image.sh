#!/usr/bin/env bash
# Builds a small ext4 root filesystem for end-to-end tests and smoke runs,
# from this host's own binaries: busybox (static) for the userland, the
# host's sshd with the libraries it links, and banger-vsock-agent. Its init
# runs the agent (banger-vsock-agent init), which mounts the basics, runs
# the boot duties, starts sshd once they are done and serves.
# No network access and no root are needed.
#
#   scripts/make-test-image.sh OUT.ext4 AGENT_BINARY [SIZE_MIB]
set -euo pipefail

out=${1:?usage: $0 OUT.ext4 AGENT_BINARY [SIZE_MIB]}
agent=${2:?usage: $0 OUT.ext4 AGENT_BINARY [SIZE_MIB]}
size_mib=${3:-256}

need() { command -v "$1" >/dev/null 2>&1 || { echo "make-test-image: $1 is missing (${2})" >&2; exit 1; }; }
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || busybox=/bin/busybox
[ -x "$busybox" ] || { echo "make-test-image: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  echo "make-test-image: $busybox is not static (apt-get install busybox-static)" >&2
  exit 1
fi
sshd=/usr/sbin/sshd
[ -x "$sshd" ] || { echo "make-test-image: $sshd is missing (apt-get install openssh-server)" >&2; exit 1; }
need ssh-keygen "apt-get install openssh-client"
need mkfs.ext4 "apt-get install e2fsprogs"
need ldd "part of libc-bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,etc/ssh,dev,proc,sys,run,tmp,root,var/empty,usr/local/bin,usr/sbin,lib64}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

install -m 0755 "$busybox" "$root/bin/busybox"
for app in $("$busybox" --list); do
  case $app in busybox|init) continue ;; esac
  [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
done
install -m 0755 "$agent" "$root/usr/local/bin/banger-vsock-agent"

# sshd and every library it links, at the same paths.
install -m 0755 "$sshd" "$root/usr/sbin/sshd"
ldd "$sshd" | awk '/=>/ {print $3} /^\t\// {print $1}' | sort -u | while read -r lib; do
  [ -n "$lib" ] && [ -e "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
for f in /lib64/ld-linux-x86-64.so.2; do cp -L "$f" "$root$f"; done

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo 'root:*:19000:0:99999:7:::' > "$root/etc/shadow"
chmod 0600 "$root/etc/shadow"
echo 'passwd: files' > "$root/etc/nsswitch.conf"
echo 'banger-test' > "$root/etc/hostname"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"

cat > "$root/etc/ssh/sshd_config" <<'SSHD'
Port 22
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
SSHD
ssh-keygen -q -t ed25519 -N '' -C banger-test -f "$root/etc/ssh/ssh_host_ed25519_key"

cat > "$root/sbin/init" <<'INIT'
#!/bin/sh
# banger test image init. The agent mounts the basics, applies the boot
# duties, starts sshd once they are done (in the background: sshd takes half
# a second to start under QEMU's software emulation) and serves; one process
# instead of a mount command each, a boot run and a serve run keeps the boot
# short. This shell stays PID 1, so orphaned processes are reaped.
export PATH=/bin:/sbin:/usr/sbin:/usr/local/bin
/usr/local/bin/banger-vsock-agent init -- \
  /bin/sh -c 'mkdir -p /run/sshd && chmod 0755 /run/sshd && exec /usr/sbin/sshd -D -e' &
# The NIC's first bring-up (filling its receive ring) takes about 150 ms
# under emulation: do it now, while the agent starts, so that its network
# duty finds the link up and only adds the address and route.
ip link set eth0 up 2>/dev/null &
wait
echo "banger test image: the guest agent exited; powering off"
poweroff -f
INIT
chmod 0755 "$root/sbin/init"

tmp_out="$out.tmp.$$"
rm -f "$tmp_out"
mkfs.ext4 -q -F -L rootfs -E root_owner=0:0 -d "$root" "$tmp_out" "${size_mib}M"
mv "$tmp_out" "$out"
echo "make-test-image: wrote $out (${size_mib} MiB)"
