package golden

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"banger/internal/progress"
)

// bootLog turns the output of debootstrap, and of mmdebstrap --verbose, into
// phases with counts of packages, so that a build shows "unpacking the base
// system 12/53" instead of one phase per package. Totals come from what the
// tools print: apt's "N newly installed" for mmdebstrap; for debootstrap,
// which prints no list up front, the required packages it extracted (the
// retrieval, the extraction and the base system are counted without a
// total). A count that passes its total raises the total: the tools' own
// lists are not exact.
//
// Lines are fed one at a time from one goroutine.
type bootLog struct {
	p progress.Reporter

	mode        bootMode
	header      string // the last "I: " line, without its "..."
	pending     int64  // packages apt said it installs (mmdebstrap)
	extracted   int64  // required packages debootstrap extracted
	done, total int64  // the current phase's count
}

type bootMode int

const (
	modeNone       bootMode = iota
	modeRetrieve            // debootstrap: "Retrieving pkg version"
	modeExtract             // debootstrap: "Extracting pkg..."
	modeDebInstall          // debootstrap: "Unpacking pkg..." / "Configuring pkg..."
	modeAptGet              // apt: "Get:N ..."
	modeAptInstall          // apt/dpkg: "Setting up pkg (version) ..."
)

// debootstrap's section headers that start a counted phase, and how many
// packages each covers (0: not known). The required packages are the ones
// it extracted. The base system's are not known: debootstrap unpacks some
// of them (systemd and its libraries) without a line each, so the packages
// retrieved but not extracted (65 for the default image) overstate the
// lines that come (53), and the phase counts without a total.
var debHeaders = map[string]func(b *bootLog) int64{
	"Unpacking required packages":   func(b *bootLog) int64 { return b.extracted },
	"Configuring required packages": func(b *bootLog) int64 { return b.extracted },
	"Unpacking the base system":     func(*bootLog) int64 { return 0 },
	"Configuring the base system":   func(*bootLog) int64 { return 0 },
}

func newBootLog(p progress.Reporter) *bootLog { return &bootLog{p: progress.OrNop(p)} }

// begin starts a phase counting packages; total 0 means not known.
func (b *bootLog) begin(name string, mode bootMode, total int64) {
	b.mode, b.done, b.total = mode, 0, total
	b.p.Phase(name)
	b.p.SetTotal(total, progress.Items)
}

func (b *bootLog) tick() {
	b.done++
	if b.total > 0 && b.done > b.total {
		b.total = b.done
		b.p.SetTotal(b.total, progress.Items)
	}
	b.p.Add(1)
}

// line takes one line of output.
func (b *bootLog) line(s string) {
	s = strings.TrimSpace(s)
	if msg, ok := strings.CutPrefix(s, "I: "); ok {
		b.info(msg)
		return
	}
	b.apt(s)
}

// info handles an "I: " line, of either tool.
func (b *bootLog) info(msg string) {
	f := strings.Fields(msg)
	switch {
	case strings.HasPrefix(msg, "Checking component "):
		b.begin("retrieving packages", modeRetrieve, 0)
		return
	case b.mode == modeRetrieve && len(f) == 3 && f[0] == "Retrieving":
		b.tick()
		return
	case len(f) >= 1 && (f[0] == "Validating" || f[0] == "Chosen"):
		return // one per package, or noise: nothing to show
	case len(f) == 2 && f[0] == "Extracting" && strings.HasSuffix(f[1], "..."):
		if b.mode != modeExtract {
			b.begin("extracting required packages", modeExtract, 0)
		}
		b.extracted++
		b.tick()
		return
	case b.mode == modeDebInstall && len(f) == 2 && (f[0] == "Unpacking" || f[0] == "Configuring") && strings.HasSuffix(f[1], "..."):
		b.tick()
		return
	}
	name := strings.TrimSpace(strings.TrimSuffix(msg, "..."))
	if name == "" {
		return // "I: ..." names nothing: no phase without a name
	}
	b.header = name
	if total, ok := debHeaders[name]; ok {
		b.begin(lowerFirst(name), modeDebInstall, total(b))
		return
	}
	b.mode = modeNone
	b.p.Phase(name)
}

// apt handles the lines of apt-get and dpkg that mmdebstrap --verbose shows.
func (b *bootLog) apt(s string) {
	switch {
	case strings.Contains(s, " newly installed,"):
		// "0 upgraded, 69 newly installed, 0 to remove and 0 not upgraded."
		f := strings.Fields(s)
		for i := 1; i < len(f); i++ {
			if f[i] == "newly" {
				if n, err := strconv.ParseInt(f[i-1], 10, 64); err == nil {
					b.pending = n
				}
			}
		}
	case strings.HasPrefix(s, "Need to get ") && b.pending > 0:
		// "Need to get 29.7 MB of archives."
		size, _, _ := strings.Cut(strings.TrimPrefix(s, "Need to get "), " of archives")
		size, _, _ = strings.Cut(size, "/") // "Need to get 1 MB/3 MB of archives."
		b.begin(fmt.Sprintf("downloading %d packages (%s)", b.pending, size), modeAptGet, b.pending)
	case b.mode == modeAptGet && strings.HasPrefix(s, "Get:"):
		b.tick()
	case strings.HasPrefix(s, "Unpacking ") || strings.HasPrefix(s, "Setting up "):
		if b.mode != modeAptInstall && b.pending > 0 {
			name := b.header
			if name == "" {
				name = "installing packages"
			}
			b.begin(name, modeAptInstall, b.pending)
		}
		if b.mode == modeAptInstall && strings.HasPrefix(s, "Setting up ") {
			b.tick()
		}
	}
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// maxLogLine is as much of one output line as is kept: the rest of a
// longer line is read and dropped.
const maxLogLine = 4096

// readLines calls fn with each line of r (its end of line and surrounding
// blanks trimmed, blank lines left out) until r ends or fails. Unlike a
// bufio.Scanner it never stops early: a line of any length is cut to
// maxLogLine and the reading goes on, so the tool writing into r is never
// left blocked on a pipe nobody drains.
func readLines(r io.Reader, fn func(line string)) {
	br := bufio.NewReaderSize(r, maxLogLine)
	var cur []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(cur) < maxLogLine {
			cur = append(cur, chunk[:min(len(chunk), maxLogLine-len(cur))]...)
		}
		if err != nil {
			if l := strings.TrimSpace(string(cur)); l != "" {
				fn(l)
			}
			return
		}
		if !isPrefix {
			if l := strings.TrimSpace(string(cur)); l != "" {
				fn(l)
			}
			cur = cur[:0]
		}
	}
}
