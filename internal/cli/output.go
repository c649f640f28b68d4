package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"banger/internal/progress"
)

// outputFormat is the value of -o on listing and inspect commands.
type outputFormat struct{ v string }

func addOutputFlag(cmd *cobra.Command, o *outputFormat) {
	o.v = "table"
	cmd.Flags().VarP(o, "output", "o", "output format: table or json")
}

func (o *outputFormat) String() string { return o.v }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(s string) error {
	switch s {
	case "table", "json":
		o.v = s
		return nil
	}
	return fmt.Errorf("%q is not an output format: use table or json", s)
}
func (o *outputFormat) json() bool { return o.v == "json" }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer, headers ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	return tw
}

// row writes one table row; each column is made printable first, so that
// a tab, newline or escape sequence in a name cannot break the table or
// the terminal.
func row(tw *tabwriter.Writer, cols ...string) {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = printable(c)
	}
	fmt.Fprintln(tw, strings.Join(out, "\t"))
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func amount(n int64, unit progress.Unit) string {
	if unit == progress.Bytes {
		return humanize.IBytes(uint64(max(n, 0)))
	}
	return fmt.Sprintf("%d", n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
