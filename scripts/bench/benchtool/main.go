package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: benchtool [-runs N] [-work DIR] ITEM
items:
  bundle   bundle.Pack and bundle.Fetch of a ~256 MiB bundle over local HTTP
           against tar|zstd and curl|tee(sha256sum)|zstd -d|tar -x
  oci      ociimage.Import of a ~200 MB 4-layer image from an in-process
           registry against skopeo copy + umoci unpack + mkfs.ext4 -d
  clone    workspace.CloneDisk of a 2 GiB rootfs ("copy" on the work dir's
           filesystem, "reflink" on a loop-mounted btrfs) against cp
  fc       fcproc.Start's ConfigDuration against Firecracker's own API
           readiness (needs BANGER_TEST_FIRECRACKER)
  kernel   peak RSS of kernelprep.Prepare (kernel import) on Debian's
           kernel package, each run in a fresh process
`

func main() {
	runs := flag.Int("runs", 5, "timed runs of each variant (medians are reported)")
	work := flag.String("work", "", "scratch directory (default: a new one under $TMPDIR, removed at exit)")
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage); flag.PrintDefaults() }
	flag.Parse()
	if flag.NArg() == 4 && flag.Arg(0) == "kernel-child" {
		if err := kernelChild(flag.Arg(1), flag.Arg(2), flag.Arg(3)); err != nil {
			fatalf("kernel-child: %v", err)
		}
		return
	}
	if flag.NArg() != 1 || *runs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "banger-bench-")
		if err != nil {
			fatalf("make a scratch directory: %v", err)
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		fatalf("make scratch directory %s: %v", dir, err)
	}

	var err error
	switch item := flag.Arg(0); item {
	case "bundle":
		err = benchBundle(ctx, dir, *runs)
	case "oci":
		err = benchOCI(ctx, dir, *runs)
	case "clone":
		err = benchClone(ctx, dir, *runs)
	case "fc":
		err = benchFC(ctx, dir, *runs)
	case "kernel":
		err = benchKernel(ctx, dir, *runs)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		stop()
		if *work == "" {
			os.RemoveAll(dir)
		}
		fatalf("%s: %v", flag.Arg(0), err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchtool: "+format+"\n", a...)
	os.Exit(1)
}

// series is the timings of one variant.
type series struct {
	name string
	d    []time.Duration
}

func (s *series) add(d time.Duration) { s.d = append(s.d, d) }

func (s *series) median() time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2
}

func (s *series) min() time.Duration { return slices.Min(s.d) }
func (s *series) max() time.Duration { return slices.Max(s.d) }

// printTable writes a Markdown table of the series. bytes, when positive,
// adds a throughput column (MiB/s of bytes at the median). base names the
// series the others are compared with: the last column is base's median
// divided by the row's (above 1 means faster than the baseline).
func printTable(title string, bytes int64, base string, rows ...*series) {
	var b *series
	for _, r := range rows {
		if r.name == base {
			b = r
		}
	}
	fmt.Printf("\n#### %s\n\n", title)
	hdr := "| variant | runs | median | min | max |"
	sep := "|---|---:|---:|---:|---:|"
	if bytes > 0 {
		hdr += " MiB/s (median) |"
		sep += "---:|"
	}
	if b != nil {
		hdr += " speed vs " + cell(base) + " |"
		sep += "---:|"
	}
	fmt.Println(hdr)
	fmt.Println(sep)
	for _, r := range rows {
		if len(r.d) == 0 {
			continue
		}
		line := fmt.Sprintf("| %s | %d | %s | %s | %s |", cell(r.name), len(r.d), fmtDur(r.median()), fmtDur(r.min()), fmtDur(r.max()))
		if bytes > 0 {
			line += fmt.Sprintf(" %.0f |", float64(bytes)/(1<<20)/r.median().Seconds())
		}
		if b != nil {
			line += fmt.Sprintf(" %.2f× |", b.median().Seconds()/r.median().Seconds())
		}
		fmt.Println(line)
	}
}

// cell escapes the pipes of a shell pipeline for a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}

// timeIt runs fn and returns how long it took. Dirty pages of earlier runs
// are written back first so that one run's writeback is not billed to the
// next.
func timeIt(fn func() error) (time.Duration, error) {
	syscall.Sync()
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

// sh runs a bash script with pipefail; on failure the error carries its
// output.
func sh(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", oneLine(script), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// q quotes s for bash.
func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func need(tools ...string) error {
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install -y %s)", t, t)
		}
	}
	return nil
}

func note(format string, a ...any) { fmt.Printf("\n"+format+"\n", a...) }

func progress(format string, a ...any) { fmt.Fprintf(os.Stderr, "benchtool: "+format+"\n", a...) }
