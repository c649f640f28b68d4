#!/usr/bin/env bash
# Cuts a banger release: pre-flight checks, reproducible archives,
# SHA256SUMS and its signature, upload, then the git tag. See
# docs/release-process.md.
#
#   scripts/publish-banger-release.sh vX.Y.Z
#   scripts/publish-banger-release.sh vX.Y.Z --dry-run DIR [--skip-tests]
#       [--allow-dirty] [--skip-changelog]
#
# --dry-run DIR writes the whole release tree (install.sh, latest,
# vX.Y.Z/...) into DIR, uploads nothing and tags nothing. Only with it may
# the pre-flight be weakened (--skip-tests, --allow-dirty: a dirty tree or a
# branch other than main, --skip-changelog) or EXTRA_LDFLAGS be set.
#
# Versions only go up: one not newer than the tree's latest is refused. A
# prerelease (vX.Y.Z-rc.1) publishes its version directory only; latest and
# the root install.sh stay as they were.
#
# Environment:
#   SIGNING_KEY     private key (default ~/.config/banger-release/cosign.key):
#                   a cosign key (needs cosign; COSIGN_PASSWORD as cosign reads
#                   it) or a PEM EC P-256 private key (openssl)
#   UPLOADER        dir:/path | rclone:remote:bucket | s3:bucket (required
#                   without --dry-run); S3_ENDPOINT for an S3-compatible store
#   ARCHES          Go architectures to build (default "amd64")
#   EXTRA_LDFLAGS   appended to make build's linker flags (dry runs only); with
#                   -X banger/internal/release.keyOverride=<base64 DER> the
#                   key check and DIR/install.sh use that key instead
#   PUBKEY_PEM      file holding that override key as PEM (optional; it is
#                   derived from EXTRA_LDFLAGS otherwise, and must match)
#   PREBUILT_BIN_DIR  dry runs only: take <dir>/<goarch>/{banger,...} instead
#                   of running make build (tests; never for a real release)
set -euo pipefail

die() { echo "publish: $*" >&2; exit 1; }
loud() { printf '\n!!! %s\n\n' "$*" >&2; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

version="" dry="" skip_tests="" allow_dirty="" skip_changelog=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) [ "$#" -ge 2 ] || die "--dry-run needs a directory"; dry="$2"; shift ;;
    --skip-tests) skip_tests=1 ;;
    --allow-dirty) allow_dirty=1 ;;
    --skip-changelog) skip_changelog=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$version" ] || die "one version only (got '$version' and '$1')"; version="$1" ;;
  esac
  shift
done
[ -n "$version" ] || { usage >&2; exit 2; }
if ! [[ "$version" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$ ]]; then
  die "'$version' is not a version: vMAJOR.MINOR.PATCH[-PRERELEASE]"
fi
plain="${version#v}"
if [ -z "$dry" ]; then
  [ -z "$skip_tests$allow_dirty$skip_changelog" ] || die "--skip-tests, --allow-dirty and --skip-changelog are for --dry-run only"
  [ -z "${EXTRA_LDFLAGS:-}" ] || die "EXTRA_LDFLAGS is set; a real release is built with the Makefile's flags only (unset it, or use --dry-run)"
  [ -z "${PREBUILT_BIN_DIR:-}" ] || die "PREBUILT_BIN_DIR is for --dry-run only"
  [ -n "${UPLOADER:-}" ] || die "set UPLOADER (dir:/path, rclone:remote:bucket or s3:bucket), or use --dry-run DIR"
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
for tool in git openssl tar gzip sha256sum make; do
  command -v "$tool" >/dev/null || die "$tool is needed; install it"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed (--sort, --mtime) for reproducible archives"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# shellcheck source=scripts/release-lib.sh
. "$root/scripts/release-lib.sh"

# --- pre-flight ----------------------------------------------------------

if git rev-parse -q --verify "refs/tags/$version" >/dev/null; then
  die "$version is already tagged; never reuse a version: cut the next one"
fi

if [ -n "$dry" ]; then
  uploader="dir:$dry"
else
  uploader="$UPLOADER"
fi
if remote_exists "$uploader" "$version/"; then
  die "$version is already in the release tree ($uploader); never reuse a version"
fi
current="$(remote_cat "$uploader" latest | head -n 1 | tr -d ' \t\r' || true)"
if [[ "$current" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] && [ "$(version_cmp "$version" "$current")" != 1 ]; then
  die "the release tree's latest is $current and $version is not newer; versions only go up (cut the next one)"
fi
prerelease=""
[[ "$version" == *-* ]] && prerelease=1

branch="$(git symbolic-ref --short -q HEAD || echo '(detached)')"
dirty="$(git status --porcelain)"
if [ -n "$allow_dirty" ]; then
  if [ -n "$dirty" ] || [ "$branch" != main ]; then
    loud "PRE-FLIGHT WEAKENED (--allow-dirty): branch '$branch', $(printf '%s' "$dirty" | grep -c . || true) uncommitted change(s); this dry run is not a release"
  fi
else
  [ -z "$dirty" ] || die "the tree has uncommitted changes; commit or stash them first:
$dirty"
  [ "$branch" = main ] || die "releases are cut from main, not '$branch'"
fi

if [ -n "$skip_changelog" ]; then
  loud "PRE-FLIGHT WEAKENED (--skip-changelog): CHANGELOG.md is not checked for $plain"
else
  check_changelog CHANGELOG.md "$plain"
fi

check_key_drift internal/release/verify_signature.go scripts/install.sh "$work"

# The key the build trusts: the pinned one, or (dry runs) the override.
trusted="$work/trusted.pem"
cp "$work/pinned.pem" "$trusted"
override=""
if [[ "${EXTRA_LDFLAGS:-}" =~ banger/internal/release\.keyOverride=([A-Za-z0-9+/=]+) ]]; then
  override="${BASH_REMATCH[1]}"
  printf '%s' "$override" | openssl base64 -d -A >"$work/override.der" 2>/dev/null ||
    die "the keyOverride in EXTRA_LDFLAGS is not base64"
  openssl pkey -pubin -inform DER -in "$work/override.der" -out "$trusted" 2>/dev/null ||
    die "the keyOverride in EXTRA_LDFLAGS is not a PKIX public key"
  if [ -n "${PUBKEY_PEM:-}" ] && ! same_key "$PUBKEY_PEM" "$trusted"; then
    die "PUBKEY_PEM ($PUBKEY_PEM) is not the key EXTRA_LDFLAGS overrides with"
  fi
  loud "KEY OVERRIDE: this build trusts a key other than the pinned one; DIR/install.sh will carry that key. Test releases only."
fi

if [ -z "$override" ] && [ -n "${PUBKEY_PEM:-}" ]; then
  die "PUBKEY_PEM is set but EXTRA_LDFLAGS carries no keyOverride; set both (dry runs) or neither"
fi

signing_key="${SIGNING_KEY:-$HOME/.config/banger-release/cosign.key}"
[ -r "$signing_key" ] || die "cannot read the signing key $signing_key (set SIGNING_KEY)"
public_of "$signing_key" >"$work/signer.pem"
if ! same_key "$work/signer.pem" "$trusted"; then
  if [ -n "$override" ]; then
    die "the signing key $signing_key is not the key EXTRA_LDFLAGS makes the build trust"
  fi
  die "the signing key $signing_key is not the pinned release key (internal/release/verify_signature.go); its public half is:
$(cat "$work/signer.pem")"
fi

last_tag="$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null || true)"
if [ -z "$last_tag" ]; then
  echo "publish: no earlier release tag; this is the first release"
elif ! git diff --quiet "$last_tag" -- packaging/systemd; then
  loud "UNIT FILES CHANGED since $last_tag (packaging/systemd). 'banger update' swaps binaries, not units: say in CHANGELOG.md how to reinstall them, and cut the verification release (docs/release-process.md)."
fi

if [ -n "$skip_tests" ]; then
  loud "PRE-FLIGHT WEAKENED (--skip-tests): make test was not run"
else
  echo "publish: make test"
  make test
fi

# --- build ---------------------------------------------------------------

SOURCE_DATE_EPOCH="$(git log -1 --format=%ct HEAD)"
export SOURCE_DATE_EPOCH
out="$work/out/$version"
mkdir -p "$out"
cp packaging/systemd/bangerd.service packaging/systemd/banger-helper.service "$out/"
for arch in ${ARCHES:-amd64}; do
  case "$arch" in amd64|arm64) ;; *) die "ARCHES: '$arch' is not amd64 or arm64" ;; esac
  stage="$work/stage-$arch"
  mkdir -p "$stage"
  if [ -n "${PREBUILT_BIN_DIR:-}" ]; then
    loud "PREBUILT_BIN_DIR: taking $arch binaries from $PREBUILT_BIN_DIR/$arch, not building them"
    for b in banger bangerd banger-vsock-agent; do cp "$PREBUILT_BIN_DIR/$arch/$b" "$stage/$b"; done
  else
    echo "publish: make build VERSION=$version GOARCH=$arch"
    # Static binaries (no cgo): they run on any glibc or musl host, and the
    # build depends on no C toolchain. Built into a private BIN so the
    # checkout's build/bin is left alone.
    GOARCH="$arch" CGO_ENABLED=0 make --no-print-directory build BIN="$work/bin-$arch" \
      VERSION="$version" EXTRA_LDFLAGS="${EXTRA_LDFLAGS:-}"
    for b in banger bangerd banger-vsock-agent; do cp "$work/bin-$arch/$b" "$stage/$b"; done
  fi
  cp packaging/systemd/bangerd.service packaging/systemd/banger-helper.service "$stage/"
  cp docs/install.md CHANGELOG.md "$stage/"
  make_archive "$stage" "$out/banger_${version}_linux_${arch}.tar.gz"
done
(cd "$out" && LC_ALL=C sha256sum -- * | LC_ALL=C sort -k2 >"$work/sums") && mv "$work/sums" "$out/SHA256SUMS"
sign "$signing_key" "$out/SHA256SUMS" "$out/SHA256SUMS.sig"
verify_sig "$trusted" "$out/SHA256SUMS" "$out/SHA256SUMS.sig" ||
  die "the new SHA256SUMS.sig does not verify against the trusted key; nothing uploaded"
echo "publish: signed SHA256SUMS:"
cat "$out/SHA256SUMS"

# The installer at the root of the tree; in an override dry run it carries
# the override key instead of the pinned block.
if [ -n "$override" ]; then
  replace_key scripts/install.sh "$trusted" >"$work/install.sh"
  loud "DIR/install.sh trusts the override key, not the pinned one (test tree)"
else
  cp scripts/install.sh "$work/install.sh"
fi
printf '%s\n' "$version" >"$work/latest"

# --- publish, then tag ---------------------------------------------------

for f in "$out"/*; do
  [ "$(basename "$f")" = SHA256SUMS.sig ] || upload "$uploader" "$f" "$version/$(basename "$f")"
done
upload "$uploader" "$out/SHA256SUMS.sig" "$version/SHA256SUMS.sig"
if [ -n "$prerelease" ]; then
  loud "PRERELEASE $version: latest and the root install.sh are left as they were; install it with --version $version"
else
  upload "$uploader" "$work/install.sh" install.sh
  upload "$uploader" "$work/latest" latest
fi

if [ -n "$dry" ]; then
  echo "publish: dry run: wrote the $version release tree to $dry; nothing uploaded, nothing tagged"
  exit 0
fi
git tag -a "$version" -m "banger $version" ||
  die "$version is published but 'git tag -a $version' failed; tag this commit ($(git rev-parse HEAD)) by hand and push it"
git push origin "$version" ||
  die "$version is published and tagged here, but 'git push origin $version' failed; push the tag by hand"
echo "publish: $version is published and tagged. Now check it from a clean machine:"
echo "  curl -fsSL <base>/install.sh | sh -s -- --version $version --prefix \$HOME/.local"
