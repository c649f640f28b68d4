package rpc

import (
	"errors"
	"fmt"
)

// Error is an API error answered by the daemon.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an API error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// DaemonUnreachableError means nothing answered on the socket.
type DaemonUnreachableError struct {
	Socket string
	Err    error
}

func (e *DaemonUnreachableError) Error() string {
	return fmt.Sprintf("bangerd is not reachable on %s: %v", e.Socket, e.Err)
}

func (e *DaemonUnreachableError) Unwrap() error { return e.Err }
