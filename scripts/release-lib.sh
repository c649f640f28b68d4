#!/usr/bin/env bash
# Functions of scripts/publish-banger-release.sh: the pre-flight checks,
# the key handling, the reproducible archive and the uploaders. Sourced,
# not run; it relies on the caller's `die`.

# pem_block FILE: the one PEM PUBLIC KEY block of FILE (BEGIN to END line,
# LF endings, text before BEGIN on its line dropped). Fails unless there is
# exactly one.
pem_block() {
  awk '
    /-----BEGIN PUBLIC KEY-----/ { n++; inb = 1; sub(/.*-----BEGIN/, "-----BEGIN") }
    inb { print }
    /-----END PUBLIC KEY-----/ { inb = 0 }
    END { if (n != 1 || inb) exit 1 }
  ' "$1"
}

# check_key_drift GOFILE SHFILE WORK: the two PEM blocks must be the same
# bytes; leaves the block in WORK/pinned.pem.
check_key_drift() {
  pem_block "$1" >"$3/go.pem" || die "$1 must hold exactly one PEM PUBLIC KEY block"
  pem_block "$2" >"$3/sh.pem" || die "$2 must hold exactly one PEM PUBLIC KEY block"
  if ! cmp -s "$3/go.pem" "$3/sh.pem"; then
    die "KEY DRIFT: the public key in $1 and the one in $2 differ; make them the same bytes before releasing:
$(diff "$3/go.pem" "$3/sh.pem" || true)"
  fi
  openssl pkey -pubin -in "$3/go.pem" -noout 2>/dev/null || die "the pinned key in $1 is not a PEM public key openssl can read"
  cp "$3/go.pem" "$3/pinned.pem"
}

# same_key A B: two PEM public keys are the same key (compared as DER).
same_key() {
  local a b
  a="$(openssl pkey -pubin -in "$1" -outform DER 2>/dev/null | od -An -tx1 | tr -d ' \n')" || return 1
  b="$(openssl pkey -pubin -in "$2" -outform DER 2>/dev/null | od -An -tx1 | tr -d ' \n')" || return 1
  [ -n "$a" ] && [ "$a" = "$b" ]
}

is_cosign_key() { grep -q 'BEGIN ENCRYPTED SIGSTORE PRIVATE KEY\|BEGIN ENCRYPTED COSIGN PRIVATE KEY' "$1"; }

# public_of KEY: the PEM public half of a cosign or PEM private key.
public_of() {
  if is_cosign_key "$1"; then
    command -v cosign >/dev/null || die "$1 is a cosign key and cosign is not installed; install cosign, or sign with a PEM EC key (openssl)"
    cosign public-key --key "$1" || die "cosign cannot read $1 (COSIGN_PASSWORD?)"
  else
    openssl pkey -in "$1" -pubout 2>/dev/null || die "openssl cannot read the private key $1 (PEM EC P-256 expected)"
  fi
}

# sign KEY FILE SIG: SIG = base64 of the DER ECDSA signature over SHA-256
# of FILE, one line.
sign() {
  if is_cosign_key "$1"; then
    cosign sign-blob --yes --key "$1" --tlog-upload=false --output-signature "$3" "$2" >/dev/null ||
      die "cosign sign-blob failed on $2"
  else
    openssl dgst -sha256 -sign "$1" "$2" | openssl base64 -A >"$3" || die "openssl cannot sign $2 with $1"
    echo >>"$3"
  fi
}

# verify_sig PEM FILE SIG
verify_sig() {
  local der
  der="$(mktemp)"
  if ! tr -d '\r\n' <"$3" | openssl base64 -d -A >"$der" 2>/dev/null; then
    rm -f "$der"
    return 1
  fi
  if ! openssl dgst -sha256 -verify "$1" -signature "$der" "$2" >/dev/null 2>&1; then
    rm -f "$der"
    return 1
  fi
  rm -f "$der"
}

# replace_key SCRIPT PEM: SCRIPT with its one PEM block replaced by PEM.
replace_key() {
  awk -v keyfile="$2" '
    /^-----BEGIN PUBLIC KEY-----$/ { while ((getline l < keyfile) > 0) print l; skip = 1; next }
    skip && /^-----END PUBLIC KEY-----$/ { skip = 0; next }
    !skip { print }
  ' "$1"
}

# check_changelog FILE X.Y.Z: a "## [X.Y.Z] - YYYY-MM-DD" entry whose
# headings are Keep a Changelog's, and the link table bumped.
check_changelog() {
  local file="$1" v="$2" esc
  esc="${v//./\\.}"
  grep -Eq "^## \[$esc\] - [0-9]{4}-[0-9]{2}-[0-9]{2}\$" "$file" ||
    die "$file has no '## [$v] - YYYY-MM-DD' entry; write the release notes first"
  local bad
  bad="$(awk -v head="## [$v] - " '
    index($0, head) == 1 { in_entry = 1; next }
    in_entry && /^## / { exit }
    in_entry && /^#/ && $0 !~ /^### (Added|Changed|Deprecated|Removed|Fixed|Security)$/ { print }
    in_entry && /^### / { n++ }
    END { if (in_entry && n == 0) print "(no ### heading at all)" }
  ' "$file")"
  [ -z "$bad" ] || die "$file: the [$v] entry may only use the headings Added, Changed, Deprecated, Removed, Fixed, Security; found:
$bad"
  grep -Eq "^\[$esc\]: .*v$esc\$" "$file" ||
    die "$file lacks the link line '[$v]: <repo>/compare/<previous>...v$v' (or '<repo>/releases/tag/v$v') at the bottom"
  grep -Eq "^\[Unreleased\]: .*/compare/v$esc\.\.\.HEAD\$" "$file" ||
    die "$file: the '[Unreleased]: <repo>/compare/v$v...HEAD' link line is missing; bump it"
}

# make_archive STAGE OUT: the flat, sorted, owner-less, SOURCE_DATE_EPOCH
# timed tar of STAGE's files, gzip'd without a name or time.
make_archive() {
  local names
  chmod 0755 "$1/banger" "$1/bangerd" "$1/banger-vsock-agent"
  chmod 0644 "$1/bangerd.service" "$1/banger-helper.service" "$1/install.md" "$1/CHANGELOG.md"
  mapfile -t names < <(cd "$1" && printf '%s\n' banger bangerd banger-vsock-agent bangerd.service banger-helper.service install.md CHANGELOG.md | LC_ALL=C sort)
  LC_ALL=C tar --format=ustar --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" --mode='u+rw,go-w' -C "$1" -cf - -- "${names[@]}" |
    gzip -n -9 >"$2" || die "cannot make $2"
}

# remote_exists UPLOADER PATH: whether PATH is already in the release tree.
remote_exists() {
  local u="$1" p="$2"
  case "$u" in
    dir:*) [ -e "${u#dir:}/$p" ] ;;
    rclone:*)
      command -v rclone >/dev/null || die "UPLOADER=rclone:... needs rclone"
      rclone lsf "${u#rclone:}/$p" 2>/dev/null | grep -q . ;;
    s3:*)
      command -v aws >/dev/null || die "UPLOADER=s3:... needs the aws CLI"
      aws s3 ls ${S3_ENDPOINT:+--endpoint-url "$S3_ENDPOINT"} "s3://${u#s3:}/$p" >/dev/null 2>&1 ;;
    *) die "UPLOADER '$u' is not dir:/path, rclone:remote:bucket or s3:bucket" ;;
  esac
}

# remote_cat UPLOADER PATH: prints PATH of the release tree, if it is there.
remote_cat() {
  local u="$1" p="$2"
  case "$u" in
    dir:*) cat "${u#dir:}/$p" 2>/dev/null ;;
    rclone:*) rclone cat "${u#rclone:}/$p" 2>/dev/null ;;
    s3:*) aws s3 cp ${S3_ENDPOINT:+--endpoint-url "$S3_ENDPOINT"} --only-show-errors "s3://${u#s3:}/$p" - 2>/dev/null ;;
  esac
}

# version_cmp A B: prints -1, 0 or 1 as vA sorts before, with or after vB
# by semver precedence (a prerelease before its release; two prereleases of
# one version compared as sort -V does, which is semver's order for the
# usual rc.N, beta.N).
version_cmp() {
  local a="${1#v}" b="${2#v}" ap="" bp="" i
  local -a x y
  [[ "$a" == *-* ]] && ap="${a#*-}"
  [[ "$b" == *-* ]] && bp="${b#*-}"
  IFS=. read -r -a x <<<"${a%%-*}"
  IFS=. read -r -a y <<<"${b%%-*}"
  for i in 0 1 2; do
    if ((10#${x[i]} > 10#${y[i]})); then echo 1; return; fi
    if ((10#${x[i]} < 10#${y[i]})); then echo -1; return; fi
  done
  if [ "$ap" = "$bp" ]; then echo 0
  elif [ -z "$ap" ]; then echo 1
  elif [ -z "$bp" ]; then echo -1
  elif [ "$(printf '%s\n%s\n' "$ap" "$bp" | LC_ALL=C sort -V | head -n 1)" = "$ap" ]; then echo -1
  else echo 1
  fi
}

# upload UPLOADER FILE PATH: put FILE at PATH of the release tree.
upload() {
  local u="$1" src="$2" p="$3" dst tmp
  case "$u" in
    dir:*)
      dst="${u#dir:}/$p"
      mkdir -p "$(dirname "$dst")"
      tmp="$(mktemp "$dst.XXXXXX")"
      if ! cp "$src" "$tmp" || ! chmod 0644 "$tmp" || ! mv -f "$tmp" "$dst"; then
        rm -f "$tmp"
        die "cannot write $dst"
      fi
      ;;
    rclone:*)
      command -v rclone >/dev/null || die "UPLOADER=rclone:... needs rclone"
      rclone copyto "$src" "${u#rclone:}/$p" || die "rclone cannot upload $p"
      ;;
    s3:*)
      command -v aws >/dev/null || die "UPLOADER=s3:... needs the aws CLI"
      aws s3 cp ${S3_ENDPOINT:+--endpoint-url "$S3_ENDPOINT"} --only-show-errors "$src" "s3://${u#s3:}/$p" ||
        die "aws s3 cp cannot upload $p"
      ;;
    *) die "UPLOADER '$u' is not dir:/path, rclone:remote:bucket or s3:bucket" ;;
  esac
  echo "published $p"
}
