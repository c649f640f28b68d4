// Package bangerenv is the isolated banger installation that the e2e and
// reliability suites drive through the CLI: banger's three binaries built
// once, and per environment its own home, config file, state dir and short
// runtime dir, with helpers to run banger there, stop its daemon and wait
// for a process to be gone. It is imported by tests only.
package bangerenv
