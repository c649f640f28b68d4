// Package sshkey manages the SSH identity banger uses to log in to its VMs
// (an ed25519 key made in-process when none exists) and the known_hosts
// records of each VM's host keys, so `banger vm ssh` connects with strict
// host key checking and never prompts.
package sshkey
