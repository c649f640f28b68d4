#!/usr/bin/env bash
# Shell functions shared by scripts/publish-golden-image.sh and
# scripts/publish-kernel.sh: writing a reproducible bundle, measuring it,
# patching a catalog entry and saying how to upload it. Source it; it does
# nothing when run.
#
# Callers set PROG (their own name, for messages) before sourcing.

PROG=${PROG:-bundle-lib}

# Paths removed when the script exits, however it exits.
_cleanup_paths=()
_run_cleanup() {
  local p
  for p in "${_cleanup_paths[@]}"; do
    rm -rf -- "$p"
  done
}
trap _run_cleanup EXIT
cleanup_add() { _cleanup_paths+=("$@"); }

die() {
  echo "$PROG: $*" >&2
  exit 1
}

# need CMD HOW: fails with HOW (an install hint) when CMD is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing ($2)"
}

# repo_version: what this checkout calls itself, for manifests.
repo_version() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  git -C "$here" describe --tags --always --dirty 2>/dev/null || echo dev
}

# iso_date EPOCH: the UTC date of a Unix time, as 2006-01-02T15:04:05Z.
iso_date() {
  date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ
}

# stamp_of FILE: the Unix time bundles made from FILE are dated with:
# SOURCE_DATE_EPOCH when set, otherwise FILE's modification time, so the same
# input always gives the same bundle.
stamp_of() {
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    case $SOURCE_DATE_EPOCH in
      *[!0-9]*) die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH is not a number of seconds" ;;
    esac
    echo "$SOURCE_DATE_EPOCH"
  else
    stat -c %Y -- "$1"
  fi
}

# normalize_modes DIR: directories 0755, executables 0755, other files 0644,
# so the bundle does not depend on the umask of whoever made the tree.
normalize_modes() {
  find "$1" -type d -exec chmod 0755 {} +
  find "$1" -type f -perm /111 -exec chmod 0755 {} +
  find "$1" -type f ! -perm /111 -exec chmod 0644 {} +
}

# pack_bundle STAGEDIR OUTFILE NAME...: writes the named top-level entries of
# STAGEDIR (and everything beneath them) to OUTFILE as a tar archive
# compressed with zstd. Entries are in name order, owned by 0:0, dated at the
# epoch, and runs of zeros are stored as holes. OUTFILE appears only when
# complete.
pack_bundle() {
  local stage=$1 out=$2
  shift 2
  local tmp
  tmp=$(mktemp "$(dirname -- "$out")/.tmp-$(basename -- "$out").XXXXXX")
  cleanup_add "$tmp"
  local names
  mapfile -t names < <(printf '%s\n' "$@" | LC_ALL=C sort)
  if ! LC_ALL=C tar -C "$stage" --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime=@0 --sparse -cf - -- "${names[@]}" | zstd -q -19 -T0 -c >"$tmp"; then
    die "writing the bundle $out failed (see the tar or zstd message above)"
  fi
  chmod 0644 "$tmp"
  mv -f -- "$tmp" "$out"
}

# sha256_of FILE and size_of FILE print what a catalog entry records.
sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }
size_of() { stat -c %s -- "$1"; }

# check_catalog FILE: FILE exists and is a catalog document jq can read.
check_catalog() {
  [ -f "$1" ] || die "catalog $1 does not exist (give --catalog FILE)"
  jq -e '.entries | type == "array"' "$1" >/dev/null 2>&1 ||
    die "catalog $1 is not a catalog document (a JSON object with an \"entries\" array)"
}

# patch_catalog FILE NAME URL SHA256 SIZE [VERSION ARCH DESCRIPTION]: sets
# the bundle of entry NAME in catalog FILE. With the last three arguments a
# missing entry is added; without them a missing entry is an error. The file
# is replaced in one rename; on any error it is left as it was.
patch_catalog() {
  local file=$1 name=$2 url=$3 sum=$4 size=$5 version=${6:-} arch=${7:-} desc=${8:-}
  local has
  has=$(jq --arg n "$name" '[.entries[] | select(.name == $n)] | length' "$file") ||
    die "reading catalog $file failed"
  if [ "$has" = 0 ] && [ -z "$version" ]; then
    die "catalog $file has no entry named $name; nothing was changed"
  fi
  local tmp
  tmp=$(mktemp "$(dirname -- "$file")/.tmp-$(basename -- "$file").XXXXXX")
  cleanup_add "$tmp"
  # Keep the documented field order: ..., kernel, bundle, build.
  if ! jq --arg n "$name" --arg url "$url" --arg sum "$sum" --argjson size "$size" \
    --arg version "$version" --arg arch "$arch" --arg desc "$desc" '
      {url: $url, sha256: $sum, size: $size} as $b
      | if any(.entries[]; .name == $n) then .
        else .entries += [{name: $n, version: $version, arch: $arch, description: $desc}] end
      | .entries |= map(
          if .name == $n then
            del(.bundle, .build) + {bundle: $b} + (if has("build") then {build: .build} else {} end)
          else . end)
    ' "$file" >"$tmp"; then
    die "patching catalog $file failed; it was left as it was"
  fi
  chmod --reference="$file" -- "$tmp" 2>/dev/null || chmod 0644 "$tmp"
  mv -f -- "$tmp" "$file"
}

# upload_hint FILE SUBDIR: how the maintainer publishes FILE. The scripts
# never upload anything themselves.
upload_hint() {
  if [ -n "${BANGER_PUBLISH_DEST:-}" ]; then
    echo "upload with:  rclone copy '$1' '${BANGER_PUBLISH_DEST%/}/$2'"
  else
    echo "upload:       BANGER_PUBLISH_DEST is not set; set it to your bundle store (an rclone remote such as mirror:banger) and run"
    echo "              rclone copy '$1' \"\$BANGER_PUBLISH_DEST/$2\""
  fi
}
