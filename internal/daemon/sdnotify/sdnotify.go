package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Ready and Stopping are the two states bangerd reports.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to the socket in $NOTIFY_SOCKET. It reports whether a
// message was sent; an unset variable is not an error.
func Notify(state string) (bool, error) {
	return NotifySocket(os.Getenv("NOTIFY_SOCKET"), state)
}

// NotifySocket sends state to the given socket path ("" = nothing to do). A
// leading '@' names an abstract socket.
func NotifySocket(path, state string) (bool, error) {
	if path == "" {
		return false, nil
	}
	name := path
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify systemd on %s: %w", path, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify systemd on %s: %w", path, err)
	}
	return true, nil
}
