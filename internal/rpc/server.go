package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"banger/internal/buildinfo"
)

// RequireAPIVersion refuses requests from clients that speak another API
// version, with an answer that says how to get both sides in step.
func RequireAPIVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(HeaderAPIVersion)
		if got != strconv.Itoa(buildinfo.APIVersion) {
			if got == "" {
				got = "none"
			}
			WriteError(w, &Error{Status: http.StatusBadRequest, Code: CodeAPIMismatch, Message: fmt.Sprintf(
				"bangerd %s speaks API version %d but the client sent version %s: "+
					"run `banger daemon restart` so the daemon and the CLI come from the same build",
				buildinfo.Version, buildinfo.APIVersion, got)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteJSON writes v as a JSON answer with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err as an ErrorBody. An *Error keeps its code and status;
// anything else is an internal error.
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	status := e.Status
	if status == 0 {
		status = StatusFor(e.Code)
	}
	var body ErrorBody
	body.Error.Code = e.Code
	body.Error.Message = e.Message
	WriteJSON(w, status, body)
}

// StatusFor maps an error code to its HTTP status.
func StatusFor(code string) int {
	switch code {
	case CodeNotFound:
		return http.StatusNotFound
	case CodeBadRequest, CodeAPIMismatch:
		return http.StatusBadRequest
	case CodeConflict:
		return http.StatusConflict
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
