#!/usr/bin/env bash
# Installs banger's binaries, its systemd units and the install guide:
#
#   $PREFIX/bin/{banger,bangerd,banger-vsock-agent}
#   $PREFIX/lib/systemd/user/bangerd.service          (user unit: the daemon)
#   $PREFIX/lib/systemd/system/banger-helper.service  (system unit: the root helper)
#   $PREFIX/share/doc/banger/install.md
#
# with each unit's ExecStart pointing at $PREFIX/bin/bangerd. It never
# enables or starts anything: it prints the systemctl commands to do so.
#
#   scripts/install.sh               install (run as root for /usr/local)
#   scripts/install.sh --uninstall   remove exactly the files listed above
#
# Environment: PREFIX (default /usr/local), DESTDIR (staging root for
# packagers; then no systemctl advice is printed), BIN_DIR (where the built
# binaries are; default build/bin of this checkout).
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

mode=install
case "${1:-}" in
  --uninstall) mode=uninstall ;;
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac
if [ "$#" -gt 1 ]; then
  echo "install.sh: too many arguments" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
BIN_DIR="${BIN_DIR:-$root/build/bin}"

case "$PREFIX" in
  /*) ;;
  *) echo "install.sh: PREFIX '$PREFIX' must be an absolute path" >&2; exit 2 ;;
esac
case "$PREFIX" in
  *[[:space:]#\&\\]*) printf "install.sh: PREFIX '%s' has a space, '#', '&' or a backslash; choose a plain path\n" "$PREFIX" >&2; exit 2 ;;
esac
PREFIX="${PREFIX%/}"
[ -n "$PREFIX" ] || PREFIX=/

bins=(banger bangerd banger-vsock-agent)
bindir="$DESTDIR$PREFIX/bin"
userunitdir="$DESTDIR$PREFIX/lib/systemd/user"
sysunitdir="$DESTDIR$PREFIX/lib/systemd/system"
docdir="$DESTDIR$PREFIX/share/doc/banger"

# put SRC DST MODE: copy through a temp file beside DST, then rename, so a
# running binary or a unit being read never sees half a file.
put() {
  local src="$1" dst="$2" mode="$3" tmp
  mkdir -p "$(dirname "$dst")"
  tmp="$(mktemp "$dst.XXXXXX")"
  if ! cp "$src" "$tmp" || ! chmod "$mode" "$tmp" || ! mv -f "$tmp" "$dst"; then
    rm -f "$tmp"
    echo "install.sh: cannot install $dst" >&2
    return 1
  fi
  echo "installed $dst"
}

# unit SRC DST: install a unit with ExecStart rewritten to $PREFIX/bin/bangerd
# and the install guide's path to $PREFIX/share/doc/banger.
unit() {
  local src="$1" dst="$2" tmp
  tmp="$(mktemp)"
  sed -e "s#^ExecStart=[^ ]*/bangerd#ExecStart=$PREFIX/bin/bangerd#" \
      -e "s#file:///usr/local/share/doc/banger/#file://$PREFIX/share/doc/banger/#" \
      "$src" >"$tmp"
  if ! grep -q "^ExecStart=$PREFIX/bin/bangerd\( \|$\)" "$tmp"; then
    rm -f "$tmp"
    echo "install.sh: $src has no ExecStart line for bangerd to point at $PREFIX/bin" >&2
    return 1
  fi
  if ! put "$tmp" "$dst" 0644; then
    rm -f "$tmp"
    return 1
  fi
  rm -f "$tmp"
}

check_writable() {
  local d="$DESTDIR$PREFIX"
  while [ ! -e "$d" ]; do d="$(dirname "$d")"; done
  if [ ! -w "$d" ]; then
    echo "install.sh: cannot write under $d; run it as root (sudo make install) or set PREFIX or DESTDIR" >&2
    exit 1
  fi
}

if [ "$mode" = uninstall ]; then
  check_writable
  for b in "${bins[@]}"; do
    rm -f "$bindir/$b" && echo "removed $bindir/$b"
  done
  rm -f "$userunitdir/bangerd.service" && echo "removed $userunitdir/bangerd.service"
  rm -f "$sysunitdir/banger-helper.service" && echo "removed $sysunitdir/banger-helper.service"
  rm -f "$docdir/install.md" && echo "removed $docdir/install.md"
  rmdir "$docdir" 2>/dev/null || true
  if [ -z "$DESTDIR" ]; then
    cat <<MSG

If the units were enabled, disable them and reload systemd:
  systemctl --user disable --now bangerd; systemctl --user daemon-reload
  sudo systemctl disable --now banger-helper; sudo systemctl daemon-reload
/etc/banger/helper-users and each user's ~/.local/state/banger are left alone.
MSG
  fi
  exit 0
fi

for b in "${bins[@]}"; do
  if [ ! -f "$BIN_DIR/$b" ]; then
    echo "install.sh: $BIN_DIR/$b is missing; run 'make build' first (or set BIN_DIR)" >&2
    exit 1
  fi
done
for f in "$root/packaging/systemd/bangerd.service" "$root/packaging/systemd/banger-helper.service" "$root/docs/install.md"; do
  if [ ! -f "$f" ]; then
    echo "install.sh: $f is missing from the checkout" >&2
    exit 1
  fi
done
check_writable

for b in "${bins[@]}"; do
  put "$BIN_DIR/$b" "$bindir/$b" 0755
done
unit "$root/packaging/systemd/bangerd.service" "$userunitdir/bangerd.service"
unit "$root/packaging/systemd/banger-helper.service" "$sysunitdir/banger-helper.service"
put "$root/docs/install.md" "$docdir/install.md" 0644

if [ -n "$DESTDIR" ]; then
  exit 0
fi
case "$PREFIX" in
  /usr|/usr/local) ;;
  *) cat <<MSG

Note: systemd does not look for units under $PREFIX/lib/systemd; link them:
  sudo ln -s $PREFIX/lib/systemd/system/banger-helper.service /etc/systemd/system/
  sudo ln -s $PREFIX/lib/systemd/user/bangerd.service /etc/systemd/user/
MSG
  ;;
esac
cat <<MSG

Nothing was enabled. To run banger's daemon as your user:
  systemctl --user daemon-reload && systemctl --user enable --now bangerd
It needs root for bridges, taps and loop devices; either run the helper
(allow your user first):
  sudo mkdir -p /etc/banger && echo "\$USER" | sudo tee -a /etc/banger/helper-users
  sudo systemctl daemon-reload && sudo systemctl enable --now banger-helper
or see $PREFIX/share/doc/banger/install.md for the other ways.
MSG
