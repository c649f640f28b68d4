
// The names of entries a guest sends are the guest's: a skipped one is
// printed quoted, escape sequences and line breaks as text.
func TestSkippedWarningQuotesTheGuestsName(t *testing.T) {
	got := skippedWarning("vm1", "dev/\x1b]52;c;ZXZpbA==\x07\nbanger: done", "FIFO")
	if strings.ContainsAny(got, "\x1b\x07\n") {
		t.Fatalf("warning %q carries the guest's control characters", got)
	}
	if !strings.Contains(got, `vm1:"dev/\x1b]52`) {
		t.Fatalf("warning %q does not name the entry", got)
	}
}
