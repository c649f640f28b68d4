// Command benchtool measures banger's hot paths against their baselines in
// the same run (bundle pull, OCI import, disk clone, Firecracker
// configuration) and prints one Markdown table per item. scripts/bench/run.sh
// drives it; docs/performance.md explains the numbers.
package main
