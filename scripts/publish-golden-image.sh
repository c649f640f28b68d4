#!/usr/bin/env bash
# Packs banger's golden image (debian-bookworm) into a reproducible catalog
# bundle, prints its sha256 and size, and records them as the bundle of the
# image catalog entry. It never uploads anything: it prints the command that
# would.
set -euo pipefail

PROG=publish-golden-image
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/bundle-lib.sh
. "$here/bundle-lib.sh"

usage() {
  cat <<EOF
usage: scripts/publish-golden-image.sh OUTDIR (--from-rootfs FILE | --build) [options]

Writes OUTDIR/NAME-<version>.tar.zst holding rootfs.ext4, work-seed.ext4 (if
given) and manifest.json, prints its sha256 and size, and sets the "bundle"
of entry NAME in the image catalog. The same inputs always give the same file
and digest.

  --from-rootfs FILE    publish this ext4 root filesystem image
  --build               run 'banger image build NAME' first and publish the
                        rootfs it made (found with 'banger image inspect NAME
                        -o json'); needs a running bangerd

options:
  --name NAME           the image catalog entry (default debian-bookworm)
  --version V           the bundle's version (default: the entry's version
                        and the manifest date, e.g. 12-20250101)
  --work-seed FILE      also bundle FILE as work-seed.ext4
  --banger BIN          the banger CLI for --build (default build/bin/banger)
  --catalog FILE        patch FILE instead of internal/catalog/images.json
  --url-prefix P        the bundle URL recorded is P<file> (default images/),
                        relative to catalog_base_url
  -h, --help            this text

The manifest is dated SOURCE_DATE_EPOCH when set, else the rootfs's mtime.
Upload destination for the printed command: \$BANGER_PUBLISH_DEST
(for example an rclone remote serving https://downloads.example/banger/).
EOF
}

name=debian-bookworm rootfs="" build=0 version="" seed="" prefix=images/
banger="$here/../build/bin/banger"
catalog="$here/../internal/catalog/images.json"
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --from-rootfs) [ $# -ge 2 ] || die "--from-rootfs needs a file"; rootfs=$2; shift 2 ;;
    --build) build=1; shift ;;
    --name) [ $# -ge 2 ] || die "--name needs a value"; name=$2; shift 2 ;;
    --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
    --work-seed) [ $# -ge 2 ] || die "--work-seed needs a file"; seed=$2; shift 2 ;;
    --banger) [ $# -ge 2 ] || die "--banger needs a file"; banger=$2; shift 2 ;;
    --catalog) [ $# -ge 2 ] || die "--catalog needs a file"; catalog=$2; shift 2 ;;
    --url-prefix) [ $# -ge 2 ] || die "--url-prefix needs a value"; prefix=$2; shift 2 ;;
    --) shift; positional+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -eq 1 ] || { usage >&2; exit 2; }
outdir=${positional[0]}

if [ "$build" = 1 ] && [ -n "$rootfs" ]; then
  die "give either --from-rootfs FILE or --build, not both"
fi
if [ "$build" = 0 ] && [ -z "$rootfs" ]; then
  die "say where the rootfs comes from: --from-rootfs FILE or --build"
fi
[[ $name =~ ^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$ ]] || die "--name $name is not a valid catalog name"
if [ -n "$version" ] && ! [[ $version =~ ^[A-Za-z0-9][A-Za-z0-9._+~-]*$ ]]; then
  die "--version $version has characters that do not belong in a file name"
fi

need jq "apt-get install jq"
need zstd "apt-get install zstd"
need tar "apt-get install tar"
check_catalog "$catalog"
entry=$(jq -c --arg n "$name" '[.entries[] | select(.name == $n)][0] // empty' "$catalog")
[ -n "$entry" ] || die "catalog $catalog has no image entry named $name"
kernel=$(jq -r '.kernel // ""' <<<"$entry")
arch=$(jq -r '.arch // "x86_64"' <<<"$entry")
[ -n "$kernel" ] || die "catalog entry $name names no kernel; fix the catalog first"

if [ "$build" = 1 ]; then
  [ -x "$banger" ] || die "$banger is missing; run 'make build' first or give --banger BIN"
  echo "$PROG: building $name with '$banger image build $name' (this takes a while)" >&2
  "$banger" image build "$name" || die "'banger image build $name' failed; see its output above"
  rootfs=$("$banger" image inspect "$name" -o json | jq -r '.rootfs // ""') ||
    die "'banger image inspect $name -o json' failed"
  [ -n "$rootfs" ] || die "'banger image inspect $name -o json' names no rootfs"
fi

check_ext4() {
  [ -f "$1" ] || die "$1 does not exist or is not a regular file"
  local magic=""
  if [ "$(size_of "$1")" -ge 2048 ]; then
    magic=$(od -An -tx1 -j1080 -N2 -- "$1" | tr -d ' \n')
  fi
  [ "$magic" = 53ef ] || die "$1 is not an ext4 filesystem image (no ext2/3/4 superblock magic at byte 1080)"
}
check_ext4 "$rootfs"
[ -z "$seed" ] || check_ext4 "$seed"
mkdir -p -- "$outdir" || die "cannot create output directory $outdir"

stamp=$(stamp_of "$rootfs")
if [ -z "$version" ]; then
  version="$(jq -r '.version' <<<"$entry")-$(date -u -d "@$stamp" +%Y%m%d)"
fi
file="$name-$version.tar.zst"
out="$outdir/$file"
how="--from-rootfs"
[ "$build" = 0 ] || how="--build"

work=$(mktemp -d)
cleanup_add "$work"
stage=$work/bundle
mkdir -p "$stage"
entries=(rootfs.ext4 manifest.json)
cp --sparse=always -- "$rootfs" "$stage/rootfs.ext4"
if [ -n "$seed" ]; then
  cp --sparse=always -- "$seed" "$stage/work-seed.ext4"
  entries+=(work-seed.ext4)
fi
jq -n --arg name "$name" --arg version "$version" --arg kernel "$kernel" --arg arch "$arch" \
  --arg by "banger $(repo_version) scripts/publish-golden-image.sh $how" --arg date "$(iso_date "$stamp")" \
  '{name: $name, kind: "image", version: $version, kernel: $kernel, arch: $arch, built_by: $by, date: $date}' \
  >"$stage/manifest.json"
normalize_modes "$stage"

pack_bundle "$stage" "$out" "${entries[@]}"
sum=$(sha256_of "$out")
size=$(size_of "$out")
patch_catalog "$catalog" "$name" "$prefix$file" "$sum" "$size"

echo "bundle:       $out"
echo "sha256:       $sum"
echo "size:         $size"
echo "catalog:      $catalog (entry $name, url $prefix$file)"
upload_hint "$out" "$prefix"
