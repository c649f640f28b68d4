// Package sdnotify tells systemd that a Type=notify service is ready or
// stopping, by writing to the datagram socket named in $NOTIFY_SOCKET. It is
// a no-op when the variable is unset, so the daemon calls it unconditionally.
package sdnotify
