#!/usr/bin/env bash
# Builds banger's generic guest kernel: a small x86_64 vmlinux for
# Firecracker (and QEMU's microvm) with virtio-mmio, virtio-blk, virtio-net,
# virtio-console, vsock, ext4, devtmpfs and the 8250 console built in, so it
# needs no initrd and has no modules. The source comes from the host's apt
# configuration (apt-get source linux) or from a tarball you give; this script
# downloads nothing else. A full build takes a while; --dry-run only shows
# the configuration and checks the build dependencies.
set -euo pipefail

PROG=make-generic-kernel
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/bundle-lib.sh
. "$here/bundle-lib.sh"

usage() {
  cat <<EOF
usage: scripts/make-generic-kernel.sh [VERSION] OUTDIR [options]

Unpacks kernel sources, configures them with 'make tinyconfig' plus the
fragment images/kernel/firecracker.config, builds vmlinux and copies it to
OUTDIR/vmlinux (with the configuration used as OUTDIR/config).

VERSION picks the Debian source package version for 'apt-get source
linux=VERSION'; without it apt's candidate is used. With --source, VERSION
is only compared with the unpacked tree's version.

options:
  --source TARBALL      build from this kernel source tarball instead of
                        'apt-get source linux' (which needs deb-src entries
                        in your apt sources)
  --config FILE         configuration fragment (default
                        images/kernel/firecracker.config)
  --jobs N              parallel make jobs (default: nproc)
  --work DIR            unpack and build in DIR and keep it (default: a
                        temporary directory, removed at the end)
  --dry-run             print the configuration that would be applied and
                        check the build dependencies; build nothing
  -h, --help            this text

Then publish it with:
  scripts/publish-kernel.sh NAME OUTDIR --from-dir OUTDIR --release RELEASE --description TEXT
EOF
}

version="" outdir="" src="" fragment="$here/../images/kernel/firecracker.config"
jobs="" work="" dry=0
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --source) [ $# -ge 2 ] || die "--source needs a tarball"; src=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; fragment=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs a number"; jobs=$2; shift 2 ;;
    --work) [ $# -ge 2 ] || die "--work needs a directory"; work=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; positional+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
case ${#positional[@]} in
  1) outdir=${positional[0]} ;;
  2) version=${positional[0]} outdir=${positional[1]} ;;
  *) usage >&2; exit 2 ;;
esac
if [ -n "$version" ] && ! [[ $version =~ ^[A-Za-z0-9][A-Za-z0-9.+~:-]*$ ]]; then
  die "VERSION $version is not a package version (digits, letters and . + ~ : -)"
fi
if [ -n "$jobs" ] && ! [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
  die "--jobs $jobs is not a positive number"
fi
[ -n "$jobs" ] || jobs=$(nproc)
[ -f "$fragment" ] || die "configuration fragment $fragment does not exist"
if [ -n "$src" ] && [ ! -f "$src" ]; then
  die "source tarball $src does not exist"
fi

# The fragment as "SYMBOL VALUE" pairs (VALUE n for "is not set").
read_fragment() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
      echo "${BASH_REMATCH[1]} n"
    elif [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.+)$ ]]; then
      echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
    elif [[ $line =~ ^[[:space:]]*(#.*)?$ ]]; then
      continue
    else
      die "$fragment: cannot read the line '$line' (use CONFIG_X=y, CONFIG_X=value or '# CONFIG_X is not set')"
    fi
  done <"$fragment"
}
mapfile -t options < <(read_fragment)
[ ${#options[@]} -gt 0 ] || die "configuration fragment $fragment sets nothing"

# Build dependencies, as "what-is-checked debian-package".
missing=()
for dep in gcc:gcc make:make flex:flex bison:bison bc:bc perl:perl tar:tar; do
  command -v "${dep%%:*}" >/dev/null 2>&1 || missing+=("${dep#*:}")
done
[ -f /usr/include/libelf.h ] || [ -f /usr/include/elfutils/libelf.h ] || missing+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
if [ -z "$src" ]; then
  command -v apt-get >/dev/null 2>&1 || missing+=(apt)
  command -v dpkg-source >/dev/null 2>&1 || missing+=(dpkg-dev)
else
  case $src in
    *.xz) command -v xz >/dev/null 2>&1 || missing+=(xz-utils) ;;
    *.zst) command -v zstd >/dev/null 2>&1 || missing+=(zstd) ;;
    *.bz2) command -v bzip2 >/dev/null 2>&1 || missing+=(bzip2) ;;
  esac
fi

if [ "$dry" = 1 ]; then
  echo "# source: ${src:-apt-get source linux${version:+=$version}}"
  echo "# output: $outdir/vmlinux"
  echo "# steps:  make ARCH=x86_64 tinyconfig; apply the options below; make olddefconfig; make -j$jobs vmlinux"
  echo "# configuration applied on top of tinyconfig ($fragment):"
  for o in "${options[@]}"; do
    sym=${o%% *} val=${o#* }
    if [ "$val" = n ]; then echo "# $sym is not set"; else echo "$sym=$val"; fi
  done
  if [ "$(uname -m)" != x86_64 ]; then
    echo "# warning: this host is $(uname -m); the build makes an x86_64 kernel and needs an x86_64 host" >&2
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "# missing build dependencies: ${missing[*]} (apt-get install ${missing[*]})"
  else
    echo "# build dependencies: all present"
  fi
  exit 0
fi

[ "$(uname -m)" = x86_64 ] || die "this host is $(uname -m); building the x86_64 guest kernel needs an x86_64 host"
[ ${#missing[@]} -eq 0 ] || die "missing build dependencies: ${missing[*]}; install them with: apt-get install ${missing[*]}"

mkdir -p -- "$outdir" || die "cannot create output directory $outdir"
outdir=$(cd "$outdir" && pwd)
if [ -n "$work" ]; then
  mkdir -p -- "$work" || die "cannot create work directory $work"
else
  work=$(mktemp -d)
  cleanup_add "$work"
fi
work=$(cd "$work" && pwd)

# Unpack the sources into $work/src.
rm -rf -- "$work/src"
mkdir -p "$work/src"
if [ -n "$src" ]; then
  echo "$PROG: unpacking $src" >&2
  tar -xf "$src" -C "$work/src" || die "unpacking $src failed; is it a kernel source tarball?"
else
  echo "$PROG: fetching sources with apt-get source linux${version:+=$version}" >&2
  if ! (cd "$work/src" && apt-get source "linux${version:+=$version}"); then
    die "apt-get source linux failed: it needs deb-src entries in your apt sources (add deb-src lines, or 'Types: deb deb-src' in a .sources file, then apt-get update), or give --source TARBALL"
  fi
fi
tree=""
for d in "$work/src"/*/; do
  if [ -f "$d/Makefile" ] && [ -f "$d/Kconfig" ] && [ -d "$d/arch/x86" ]; then
    tree=${d%/}
    break
  fi
done
[ -n "$tree" ] || die "no kernel source tree (a directory with Makefile, Kconfig and arch/x86) was unpacked from ${src:-apt-get source linux}"

kmake() { make -C "$tree" ARCH=x86_64 "$@"; }
tree_version=$(kmake -s kernelversion)
if [ -n "$src" ] && [ -n "$version" ] && [ "$tree_version" != "$version" ]; then
  echo "$PROG: note: the tree is version $tree_version, not $version" >&2
fi

echo "$PROG: configuring linux $tree_version" >&2
kmake tinyconfig >/dev/null
# Twice: an option whose dependency comes later in the fragment sticks on
# the second pass.
for _ in 1 2; do
  for o in "${options[@]}"; do
    sym=${o%% *} val=${o#* }
    case $val in
      y) "$tree/scripts/config" --file "$tree/.config" --enable "$sym" ;;
      n) "$tree/scripts/config" --file "$tree/.config" --disable "$sym" ;;
      m) die "$fragment: $sym=m asks for a module; this kernel has none" ;;
      \"*\") v=${val#\"}; "$tree/scripts/config" --file "$tree/.config" --set-str "$sym" "${v%\"}" ;;
      *) "$tree/scripts/config" --file "$tree/.config" --set-val "$sym" "$val" ;;
    esac
  done
  kmake olddefconfig >/dev/null
done

# Every option asked for must have survived olddefconfig.
lost=()
for o in "${options[@]}"; do
  sym=${o%% *} val=${o#* }
  if [ "$val" = n ]; then
    if grep -q "^$sym=" "$tree/.config"; then lost+=("$sym (still set)"); fi
  elif ! grep -qxF "$sym=$val" "$tree/.config"; then
    lost+=("$sym=$val")
  fi
done
[ ${#lost[@]} -eq 0 ] ||
  die "linux $tree_version did not accept these options (renamed, or a dependency is missing): ${lost[*]}; adjust $fragment"

echo "$PROG: building vmlinux with $jobs jobs" >&2
kmake -j"$jobs" vmlinux || die "building vmlinux failed; see the compiler output above"
release=$(kmake -s kernelrelease)
install -m 0644 "$tree/vmlinux" "$outdir/vmlinux.tmp"
mv -f "$outdir/vmlinux.tmp" "$outdir/vmlinux"
install -m 0644 "$tree/.config" "$outdir/config"

echo "vmlinux:      $outdir/vmlinux"
echo "release:      $release"
echo "publish with: scripts/publish-kernel.sh NAME '$outdir' --from-dir '$outdir' --release '$release' --description 'Generic Firecracker kernel $release'"
