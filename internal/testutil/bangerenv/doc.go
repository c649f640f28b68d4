// Package bangerenv is the isolated banger installation that the e2e and
// reliability suites drive through the CLI: banger's three binaries built
// once, and per environment its own home, config file, state dir and short
// runtime dir, with helpers to run banger there, stop its daemon, wait for
// a process to be gone and list the processes it left running. It is
// imported by tests only.
package bangerenv
