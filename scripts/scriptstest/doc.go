// Package scriptstest runs banger's maintainer shell scripts
// (scripts/publish-kernel.sh, scripts/publish-golden-image.sh and
// scripts/make-generic-kernel.sh --dry-run) against throwaway inputs and
// checks their bundles with banger's own catalog parser and bundle fetcher;
// and scripts/host-deps.sh against stand-ins for apt while a real lock is
// held. It holds tests only.
package scriptstest
