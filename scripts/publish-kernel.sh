#!/usr/bin/env bash
# Packs a banger kernel directory into a reproducible catalog bundle
# (NAME-<release>.tar.zst), prints its sha256 and size, and records them as
# the bundle of kernel catalog entry NAME. It never uploads anything: it
# prints the command that would.
set -euo pipefail

PROG=publish-kernel
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/bundle-lib.sh
. "$here/bundle-lib.sh"

usage() {
  cat <<EOF
usage: scripts/publish-kernel.sh NAME OUTDIR --from-dir KERNELDIR [options]

Writes OUTDIR/NAME-<release>.tar.zst holding vmlinux, initrd.img (if any),
modules/ (if any) and manifest.json, prints its sha256 and size, and sets
the "bundle" of entry NAME in the kernel catalog (adding the entry if it is
missing). The same inputs always give the same file and digest.

KERNELDIR has the layout of a banger kernel directory:
  vmlinux               the uncompressed kernel (required)
  initrd.img            optional initial ramdisk
  modules/<release>/    optional modules tree; its name is the release
For a kernel banger already has, that is the directory holding the vmlinux
named by:  banger kernel inspect NAME -o json

options:
  --from-dir DIR        the kernel directory (required)
  --release R           the kernel release (default: the one directory in
                        KERNELDIR/modules; required when there is no modules/)
  --description TEXT    description for a new catalog entry (required when
                        NAME is not in the catalog yet; ignored otherwise)
  --arch A              architecture of a new entry (default x86_64)
  --catalog FILE        patch FILE instead of internal/catalog/kernels.json
  --url-prefix P        the bundle URL recorded is P<file> (default kernels/),
                        relative to catalog_base_url
  -h, --help            this text

The manifest is dated SOURCE_DATE_EPOCH when set, else vmlinux's mtime.
Upload destination for the printed command: \$BANGER_PUBLISH_DEST
(for example an rclone remote serving https://downloads.example/banger/).
EOF
}

name="" outdir="" from="" release="" desc="" arch=x86_64 prefix=kernels/
catalog="$here/../internal/catalog/kernels.json"
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --from-dir) [ $# -ge 2 ] || die "--from-dir needs a directory"; from=$2; shift 2 ;;
    --release) [ $# -ge 2 ] || die "--release needs a value"; release=$2; shift 2 ;;
    --description) [ $# -ge 2 ] || die "--description needs a value"; desc=$2; shift 2 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; shift 2 ;;
    --catalog) [ $# -ge 2 ] || die "--catalog needs a file"; catalog=$2; shift 2 ;;
    --url-prefix) [ $# -ge 2 ] || die "--url-prefix needs a value"; prefix=$2; shift 2 ;;
    --) shift; positional+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -eq 2 ] || { usage >&2; exit 2; }
name=${positional[0]}
outdir=${positional[1]}

[[ $name =~ ^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$ ]] ||
  die "NAME $name is not a valid catalog name: use 1 to 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
case $arch in x86_64 | amd64) ;; *) die "--arch $arch is not supported: use x86_64 or amd64" ;; esac
[ -n "$from" ] || die "give the kernel directory with --from-dir KERNELDIR"
[ -d "$from" ] || die "kernel directory $from does not exist"
if [ ! -f "$from/vmlinux" ] || [ ! -s "$from/vmlinux" ]; then
  die "$from/vmlinux is missing or empty; KERNELDIR must hold the uncompressed kernel as vmlinux"
fi
if [ -e "$from/initrd.img" ] && [ ! -f "$from/initrd.img" ]; then
  die "$from/initrd.img is not a regular file"
fi

if [ -e "$from/modules" ]; then
  [ -d "$from/modules" ] || die "$from/modules is not a directory"
  mapfile -t rels < <(find "$from/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort)
  if [ -z "$release" ]; then
    [ ${#rels[@]} -eq 1 ] ||
      die "$from/modules must hold exactly one release directory (found ${#rels[@]}: ${rels[*]:-none}); say which with --release"
    release=${rels[0]}
  fi
  [ -d "$from/modules/$release" ] || die "$from/modules has no directory for release $release (found: ${rels[*]:-none})"
fi
[ -n "$release" ] || die "$from has no modules/ directory to take the release from; give it with --release R"
[[ $release =~ ^[A-Za-z0-9][A-Za-z0-9._+~-]*$ ]] || die "release $release has characters that do not belong in a file name"

need jq "apt-get install jq"
need zstd "apt-get install zstd"
need tar "apt-get install tar"
check_catalog "$catalog"
if ! jq -e --arg n "$name" 'any(.entries[]; .name == $n)' "$catalog" >/dev/null && [ -z "$desc" ]; then
  die "catalog $catalog has no entry $name; give --description TEXT to add one"
fi
mkdir -p -- "$outdir" || die "cannot create output directory $outdir"

file="$name-$release.tar.zst"
out="$outdir/$file"
stamp=$(stamp_of "$from/vmlinux")

work=$(mktemp -d)
cleanup_add "$work"
stage=$work/bundle
mkdir -p "$stage"
entries=(vmlinux manifest.json)
cp -- "$from/vmlinux" "$stage/vmlinux"
if [ -f "$from/initrd.img" ]; then
  cp -- "$from/initrd.img" "$stage/initrd.img"
  entries+=(initrd.img)
fi
if [ -d "$from/modules" ]; then
  # Only the release being published; symlinks are kept as they are.
  mkdir -p "$stage/modules"
  cp -a -- "$from/modules/$release" "$stage/modules/$release"
  entries+=(modules)
fi
normalize_modes "$stage"
jq -n --arg name "$name" --arg release "$release" --arg arch "$arch" \
  --arg by "banger $(repo_version) scripts/publish-kernel.sh" --arg date "$(iso_date "$stamp")" \
  '{name: $name, kind: "kernel", release: $release, arch: $arch, built_by: $by, date: $date}' \
  >"$stage/manifest.json"
chmod 0644 "$stage/manifest.json"

pack_bundle "$stage" "$out" "${entries[@]}"
sum=$(sha256_of "$out")
size=$(size_of "$out")
patch_catalog "$catalog" "$name" "$prefix$file" "$sum" "$size" "$release" "$arch" "$desc"

echo "bundle:       $out"
echo "sha256:       $sum"
echo "size:         $size"
echo "catalog:      $catalog (entry $name, url $prefix$file)"
upload_hint "$out" "$prefix"
