#!/bin/sh
# Installs banger: its binaries, its systemd units and the install guide.
#
#   $PREFIX/bin/{banger,bangerd,banger-vsock-agent}
#   $PREFIX/lib/systemd/user/bangerd.service          (user unit: the daemon)
#   $PREFIX/lib/systemd/system/banger-helper.service  (system unit: the root helper)
#   $PREFIX/share/doc/banger/install.md (and CHANGELOG.md from a release)
#
# Two modes share the installing code:
#
#   Remote (the default outside a banger checkout, e.g. `curl -fsSL
#   <base>/install.sh | sh`): downloads a release from the release tree,
#   checks the signature over SHA256SUMS against the public key below with
#   openssl, then the archive's checksum and its entry names, and only then
#   writes under PREFIX.
#
#   Local (`make install`, `scripts/install.sh --local`, or run from a
#   checkout): installs build/bin (or BIN_DIR) and the checkout's units.
#
# It never enables or starts anything: it prints the commands to do so.
# POSIX sh on purpose (dash runs it); everything is in main, called on the
# last line, so a download cut short runs nothing.

set -eu
# pipefail is not POSIX and dash has none; take it where the shell has it.
# shellcheck disable=SC3040
if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi

DEFAULT_BASE_URL=https://releases.banger.dev
MAX_SUMS_SIZE=65536
MAX_ARCHIVE_SIZE=268435456
BINS="banger bangerd banger-vsock-agent"
ARCHIVE_FILES="banger bangerd banger-vsock-agent bangerd.service banger-helper.service install.md CHANGELOG.md"

# pinned_key prints the public key releases are signed with. It is the same
# block, byte for byte, as internal/release/verify_signature.go's
# PublicKeyPEM; a test and the publish script refuse any drift.
pinned_key() {
  cat <<'PEM'
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGDUK4H8kOPttaF6y3teEzBtO0Z/P
An6SE/hIXeTh0cOihHo9DYxJJwIGUS+eZQgy5PMHtEv0V9qCBO2WrT7udQ==
-----END PUBLIC KEY-----
PEM
}

usage() {
  cat <<'USAGE'
Usage:
  install.sh [--version vX.Y.Z] [--prefix DIR] [--base-url URL]   install a release
  install.sh --local                                              install this checkout's build/bin
  install.sh --uninstall [--prefix DIR]                           remove what it installs
  install.sh -h | --help

Options:
  --version V    release to install (default: the one <base>/latest names)
  --prefix DIR   install under DIR (default /usr/local; env PREFIX); a user
                 without root can use --prefix ~/.local
  --base-url URL release tree (default https://releases.banger.dev; env
                 BANGER_RELEASE_URL); http(s):// or file://
  --local        install the binaries of this checkout (env BIN_DIR, default
                 build/bin) instead of downloading; what `make install` runs
  --uninstall    remove exactly the files it installs
Environment: PREFIX, DESTDIR (staging root for packagers; then no systemctl
advice is printed), BIN_DIR (local mode), BANGER_RELEASE_URL.
USAGE
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

# --- installing (both modes) ---------------------------------------------

# put SRC DST MODE: copy through a temp file beside DST, then rename, so a
# running binary or a unit being read never sees half a file.
put() {
  mkdir -p "$(dirname "$2")"
  put_tmp="$(mktemp "$2.XXXXXX")"
  if ! cp "$1" "$put_tmp" || ! chmod "$3" "$put_tmp" || ! mv -f "$put_tmp" "$2"; then
    rm -f "$put_tmp"
    die "cannot install $2"
  fi
  echo "installed $2"
}

# unit SRC DST: install a unit with ExecStart rewritten to $PREFIX/bin/bangerd
# and the install guide's path to $PREFIX/share/doc/banger.
unit() {
  unit_tmp="$(mktemp)"
  sed -e "s#^ExecStart=[^ ]*/bangerd#ExecStart=$PREFIX/bin/bangerd#" \
      -e "s#file:///usr/local/share/doc/banger/#file://$PREFIX/share/doc/banger/#" \
      "$1" >"$unit_tmp"
  if ! grep -q "^ExecStart=$PREFIX/bin/bangerd\( \|$\)" "$unit_tmp"; then
    rm -f "$unit_tmp"
    die "$1 has no ExecStart line for bangerd to point at $PREFIX/bin"
  fi
  put "$unit_tmp" "$2" 0644 || { rm -f "$unit_tmp"; exit 1; }
  rm -f "$unit_tmp"
}

# check_prefix validates PREFIX: absolute, and nothing sed or systemd would
# read differently.
check_prefix() {
  case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: PREFIX '$PREFIX' must be an absolute path" >&2; exit 2 ;;
  esac
  case "$PREFIX" in
    *[[:space:]#\&\\]*) printf "install.sh: PREFIX '%s' has a space, '#', '&' or a backslash; choose a plain path\n" "$PREFIX" >&2; exit 2 ;;
  esac
  PREFIX="${PREFIX%/}"
  [ -n "$PREFIX" ] || PREFIX=/
  bindir="$DESTDIR$PREFIX/bin"
  userunitdir="$DESTDIR$PREFIX/lib/systemd/user"
  sysunitdir="$DESTDIR$PREFIX/lib/systemd/system"
  docdir="$DESTDIR$PREFIX/share/doc/banger"
}

check_writable() {
  cw_dir="$DESTDIR$PREFIX"
  while [ ! -e "$cw_dir" ]; do cw_dir="$(dirname "$cw_dir")"; done
  if [ ! -w "$cw_dir" ]; then
    die "cannot write under $cw_dir; run it as root (sudo), or choose another --prefix (e.g. --prefix \$HOME/.local) or DESTDIR"
  fi
}

# install_tree BIN_SRC UNIT_SRC DOC_SRC: the binaries from BIN_SRC, the
# unit templates from UNIT_SRC, install.md (and CHANGELOG.md when there is
# one) from DOC_SRC.
install_tree() {
  for b in $BINS; do
    put "$1/$b" "$bindir/$b" 0755
  done
  unit "$2/bangerd.service" "$userunitdir/bangerd.service"
  unit "$2/banger-helper.service" "$sysunitdir/banger-helper.service"
  put "$3/install.md" "$docdir/install.md" 0644
  if [ -f "$3/CHANGELOG.md" ]; then
    put "$3/CHANGELOG.md" "$docdir/CHANGELOG.md" 0644
  fi
}

uninstall() {
  check_writable
  for b in $BINS; do
    rm -f "$bindir/$b" && echo "removed $bindir/$b"
  done
  rm -f "$userunitdir/bangerd.service" && echo "removed $userunitdir/bangerd.service"
  rm -f "$sysunitdir/banger-helper.service" && echo "removed $sysunitdir/banger-helper.service"
  rm -f "$docdir/install.md" && echo "removed $docdir/install.md"
  if [ -f "$docdir/CHANGELOG.md" ]; then
    rm -f "$docdir/CHANGELOG.md" && echo "removed $docdir/CHANGELOG.md"
  fi
  rmdir "$docdir" 2>/dev/null || true
  [ -z "$DESTDIR" ] || return 0
  cat <<MSG

If the units were enabled, disable them and reload systemd:
  systemctl --user disable --now bangerd; systemctl --user daemon-reload
  sudo systemctl disable --now banger-helper; sudo systemctl daemon-reload
/etc/banger/helper-users and each user's ~/.local/state/banger are left alone.
MSG
}

next_steps() {
  [ -z "$DESTDIR" ] || return 0
  case "$PREFIX" in
    /usr|/usr/local) ;;
    *) cat <<MSG

Note: systemd does not look for units under $PREFIX/lib/systemd; link them:
  sudo ln -s $PREFIX/lib/systemd/system/banger-helper.service /etc/systemd/system/
  sudo ln -s $PREFIX/lib/systemd/user/bangerd.service /etc/systemd/user/
(or, for your user only: mkdir -p ~/.config/systemd/user &&
  ln -s $PREFIX/lib/systemd/user/bangerd.service ~/.config/systemd/user/)
and make sure $PREFIX/bin is on your PATH.
MSG
    ;;
  esac
  cat <<MSG

Nothing was enabled or started. To run banger's daemon as your user:
  systemctl --user daemon-reload && systemctl --user enable --now bangerd
It needs root for bridges, taps and loop devices; either run the helper
(allow your user first):
  sudo mkdir -p /etc/banger && echo "\$USER" | sudo tee -a /etc/banger/helper-users
  sudo systemctl daemon-reload && sudo systemctl enable --now banger-helper
or see $PREFIX/share/doc/banger/install.md for the other ways.
Then check the host with:
  $PREFIX/bin/banger doctor
MSG
}

# --- local mode ----------------------------------------------------------

# checkout_root prints the checkout this script is part of, if any.
checkout_root() {
  case "$0" in
    */install.sh) ;;
    *) return 1 ;;
  esac
  cr_dir="$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)" || return 1
  [ -f "$cr_dir/go.mod" ] && [ -f "$cr_dir/packaging/systemd/bangerd.service" ] || return 1
  echo "$cr_dir"
}

install_local() {
  root="$(checkout_root)" || die "--local needs the script of a banger checkout (scripts/install.sh)"
  BIN_DIR="${BIN_DIR:-$root/build/bin}"
  for b in $BINS; do
    [ -f "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing; run 'make build' first (or set BIN_DIR)"
  done
  for f in "$root/packaging/systemd/bangerd.service" "$root/packaging/systemd/banger-helper.service" "$root/docs/install.md"; do
    [ -f "$f" ] || die "$f is missing from the checkout"
  done
  check_writable
  install_tree "$BIN_DIR" "$root/packaging/systemd" "$root/docs"
  next_steps
}

# --- remote mode ---------------------------------------------------------

# is_version V: vMAJOR.MINOR.PATCH[-PRERELEASE], no leading zeros.
is_version() {
  [ "${#1}" -le 64 ] || return 1
  printf '%s\n' "$1" | grep -Eqx 'v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?'
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is needed ($2); install it (apt-get install $1, dnf install $1) and run again"
}

# fetch URL FILE MAXBYTES
fetch() {
  if [ -n "$downloader_curl" ]; then
    curl -fsSL --retry 2 --connect-timeout 30 --max-filesize "$3" -o "$2" "$1" || die "cannot download $1 (curl failed; is the version published and the URL right?)"
  else
    case "$1" in
      file://*) cp "${1#file://}" "$2" 2>/dev/null || die "cannot read $1" ;;
      *) wget -q -O "$2" "$1" || die "cannot download $1 (wget failed; is the version published and the URL right?)" ;;
    esac
  fi
  fetch_size="$(wc -c <"$2")"
  [ "$fetch_size" -le "$3" ] || die "$1 is $fetch_size bytes, more than the $3 a release file may have; refused"
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    openssl dgst -sha256 -r "$1" | cut -d' ' -f1
  fi
}

detect_arch() {
  case "$(uname -m)" in
    x86_64|amd64) echo amd64 ;;
    aarch64|arm64) echo arm64 ;;
    *) die "no banger release for this machine ($(uname -m)); releases exist for x86_64 and aarch64" ;;
  esac
}

# verify_sums DIR: SHA256SUMS.sig must be the pinned key's signature over
# SHA256SUMS.
verify_sums() {
  pinned_key >"$1/key.pem"
  tr -d '\r\n' <"$1/SHA256SUMS.sig" >"$1/sig.b64"
  if ! openssl base64 -d -A -in "$1/sig.b64" -out "$1/sig.der" 2>/dev/null || [ ! -s "$1/sig.der" ]; then
    die "SHA256SUMS.sig of $version is not base64; refused, nothing installed"
  fi
  if ! openssl dgst -sha256 -verify "$1/key.pem" -signature "$1/sig.der" "$1/SHA256SUMS" >/dev/null 2>&1; then
    die "the signature over SHA256SUMS of $version does not match banger's release key; refused, nothing installed (a tampered or mis-signed release: report it)"
  fi
}

# verify_archive DIR NAME: its SHA256SUMS line must match, and its entries
# must be exactly the expected regular files.
verify_archive() {
  va_want="$(awk -v n="$2" '$2 == n || $2 == "*" n { print $1 }' "$1/SHA256SUMS")"
  if [ -z "$va_want" ] || [ "$(printf '%s\n' "$va_want" | wc -l)" -ne 1 ]; then
    die "SHA256SUMS of $version lists $2 not exactly once; refused, nothing installed"
  fi
  va_got="$(sha256_of "$1/$2")"
  [ "$va_got" = "$va_want" ] || die "$2 has SHA-256 $va_got but the signed SHA256SUMS says $va_want (a truncated or altered download); refused, nothing installed"
  tar -tzf "$1/$2" >"$1/entries" 2>/dev/null || die "$2 is not a readable gzip'd tar; refused, nothing installed"
  tar -tvzf "$1/$2" >"$1/listing" 2>/dev/null || die "$2 is not a readable gzip'd tar; refused, nothing installed"
  if grep -qv '^-' "$1/listing"; then
    die "$2 has an entry that is not a regular file; refused, nothing installed"
  fi
  while IFS= read -r va_name; do
    va_ok=
    for va_f in $ARCHIVE_FILES; do
      if [ "$va_name" = "$va_f" ]; then va_ok=1; fi
    done
    [ -n "$va_ok" ] || die "$2 has an unexpected entry '$va_name'; refused, nothing installed"
  done <"$1/entries"
  for va_f in $ARCHIVE_FILES; do
    [ "$(grep -cx -- "$va_f" "$1/entries")" -eq 1 ] || die "$2 does not hold $va_f exactly once; refused, nothing installed"
  done
}

install_remote() {
  need openssl "to check the release signature"
  need tar "to unpack the release"
  need gzip "to unpack the release"
  downloader_curl=
  if command -v curl >/dev/null 2>&1; then
    downloader_curl=1
  else
    need wget "or curl, to download the release"
  fi
  base="${base%/}"
  if [ -n "$version" ] && ! is_version "$version"; then
    echo "install.sh: '$version' is not a version (vMAJOR.MINOR.PATCH[-PRERELEASE]); refused" >&2
    exit 2
  fi
  arch="$(detect_arch)"
  check_writable

  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM HUP

  if [ -z "$version" ]; then
    fetch "$base/latest" "$tmp/latest" 256
    version="$(head -n 1 "$tmp/latest" | tr -d ' \t\r')"
    is_version "$version" || die "$base/latest does not name a version; refused"
  fi
  archive="banger_${version}_linux_${arch}.tar.gz"
  echo "installing banger $version ($arch) from $base"
  fetch "$base/$version/SHA256SUMS" "$tmp/SHA256SUMS" "$MAX_SUMS_SIZE"
  fetch "$base/$version/SHA256SUMS.sig" "$tmp/SHA256SUMS.sig" "$MAX_SUMS_SIZE"
  verify_sums "$tmp"
  fetch "$base/$version/$archive" "$tmp/$archive" "$MAX_ARCHIVE_SIZE"
  verify_archive "$tmp" "$archive"
  echo "verified the signature over SHA256SUMS and the checksum of $archive"

  mkdir "$tmp/x"
  # shellcheck disable=SC2086 # the names are fixed words
  tar -xzf "$tmp/$archive" --no-same-owner -C "$tmp/x" $ARCHIVE_FILES || die "cannot unpack $archive"
  for f in $ARCHIVE_FILES; do
    if [ ! -f "$tmp/x/$f" ] || [ -L "$tmp/x/$f" ]; then
      die "$archive did not unpack $f as a regular file"
    fi
  done
  install_tree "$tmp/x" "$tmp/x" "$tmp/x"
  echo
  echo "banger $version is installed under $PREFIX."
  next_steps
}

main() {
  mode=
  action=install
  version=
  base="${BANGER_RELEASE_URL:-$DEFAULT_BASE_URL}"
  PREFIX="${PREFIX:-/usr/local}"
  DESTDIR="${DESTDIR:-}"
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --uninstall) action=uninstall ;;
      --local) mode=local ;;
      --version|--prefix|--base-url)
        [ "$#" -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }
        case "$1" in
          --version) version="$2"; mode="${mode:-remote}" ;;
          --prefix) PREFIX="$2" ;;
          --base-url) base="$2"; mode="${mode:-remote}" ;;
        esac
        shift ;;
      --version=*) version="${1#*=}"; mode="${mode:-remote}" ;;
      --prefix=*) PREFIX="${1#*=}" ;;
      --base-url=*) base="${1#*=}"; mode="${mode:-remote}" ;;
      -h|--help) usage; exit 0 ;;
      *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
  if [ -z "$mode" ]; then
    if [ -n "${BIN_DIR:-}" ] || checkout_root >/dev/null; then mode=local; else mode=remote; fi
  fi
  if [ "$mode" = local ] && [ -n "$version" ]; then
    echo "install.sh: --version is for installing a release, not with --local" >&2
    exit 2
  fi
  check_prefix
  if [ "$action" = uninstall ]; then
    uninstall
  elif [ "$mode" = local ]; then
    install_local
  else
    install_remote
  fi
}

main "$@"
