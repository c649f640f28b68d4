// Package vmmtest is a fake vmm.Driver for the daemon's lifecycle tests:
// no VM boots, but each Machine serves the real guest agent on a Unix
// socket in its run dir (health, shutdown), writes a console log, and can
// be told to fail its start, exit at boot, never become ready, ignore a
// poweroff, or exit on its own. Machines outlive the daemon that started
// them, so a second manager can adopt them as after a restart.
package vmmtest
