// Package procwatch is everything banger does with a process it did not
// just fork and reap itself, or wants to watch: it reads the process table
// (/proc/PID/stat with one parser, the command line, the working
// directory, the uids, the root), scans all processes, checks that a pid
// is still the process that started at a given time (the adoption check),
// holds a process through a pidfd (Handle: opened by pid and start time,
// checked after the open; signals go through the pidfd, so a reused pid is
// never signalled; Done closes when the process exits) and kills strays
// with a bounded wait (Kill, KillMatching).
//
// A Handle is either a child started with Start (its watcher reaps it) or
// a process opened with Open (typically a VMM adopted after a daemon
// restart). It needs Linux 5.3 or later (pidfd_open, CLONE_PIDFD).
//
// It is a leaf: it knows nothing of VMMs or of the daemon; fcproc,
// qemuproc, imagemgr and the daemon root say which processes are theirs.
package procwatch
