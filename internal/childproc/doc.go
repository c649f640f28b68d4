// Package childproc starts the daemon's child processes so that they die
// with it: each gets Pdeathsig SIGKILL, and every fork happens on one
// dedicated OS thread that never exits. The kernel sends the parent-death
// signal when the thread that forked the child ends, not the process; Go
// may end a thread under any goroutine that locked it and returned without
// unlocking, so a child forked on an ordinary thread could be killed while
// the daemon lives on.
package childproc
