// Package netnstest gives tests network namespaces of their own, so that
// what they build (bridges, taps, addresses, nftables rules, sysctls) never
// touches the host's network. Creating one needs root; without it, or
// when the kernel refuses, the test is skipped and says why.
package netnstest
