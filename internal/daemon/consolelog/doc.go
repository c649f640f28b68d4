// Package consolelog keeps a VM's console log bounded and shows its end
// safely. The VMM writes the guest's serial console to a file it holds open
// in append mode, so the file outlives bangerd and the guest never blocks on
// a reader. Rotator caps that file while bangerd runs: when it passes its
// limit, its last bytes are copied to NAME.1 (one rotation, replaced
// atomically) and the file is truncated in place, which the VMM's appending
// writes follow (copytruncate). While no bangerd runs the file grows
// unchecked; the next bangerd's first check, at re-adoption, rotates it.
// Tail reads only a bounded end of a log and Sanitize strips what a hostile
// guest could use against a terminal: escape sequences (CSI, OSC, DCS and
// the rest), C0 and C1 controls other than newline and tab, bidirectional
// overrides, and invalid UTF-8.
package consolelog
