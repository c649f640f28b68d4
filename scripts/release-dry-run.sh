#!/usr/bin/env bash
# The release rehearsal CI runs (make release-dry-run): publishes this
# checkout with --dry-run into OUT, signed by a throwaway key that the
# build and OUT/install.sh trust (keyOverride), then installs it from
# file://OUT into a temporary prefix with OUT/install.sh under sh and runs
# the installed banger. Nothing is uploaded or tagged, and no real key is
# needed: it proves the publish path and the installer agree.
#
#   scripts/release-dry-run.sh [VERSION [OUT]]    (default v0.0.0 build/release; a
#   prerelease would leave out install.sh and latest)
set -euo pipefail

version="${1:-v0.0.0}"
out="${2:-build/release}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [ -e "$out/$version" ]; then
  echo "release-dry-run: $out/$version exists; remove it or pick another OUT" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$work/throwaway.key" 2>/dev/null
der_b64="$(openssl pkey -in "$work/throwaway.key" -pubout -outform DER | openssl base64 -A)"

SIGNING_KEY="$work/throwaway.key" \
  EXTRA_LDFLAGS="-X banger/internal/release.keyOverride=$der_b64" \
  scripts/publish-banger-release.sh "$version" --dry-run "$out" \
  --skip-tests --allow-dirty --skip-changelog

sh "$out/install.sh" --base-url "file://$out" --version "$version" --prefix "$work/prefix"
"$work/prefix/bin/banger" version | grep -F "$version" >/dev/null || {
  echo "release-dry-run: the installed banger does not report $version" >&2
  exit 1
}
echo "release-dry-run: $version published to $out and installed from it with install.sh"
