package privhelper

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"
)

// DefaultSocket is where the helper listens.
const DefaultSocket = "/run/banger/helper.sock"

// Client asks the helper for privileged work.
type Client struct{ Socket string }

func writeResponse(w io.Writer, r Response) { _ = json.NewEncoder(w).Encode(r) }

// Do sends one request and returns the answer, or the helper's refusal as
// an *Error.
func (c Client) Do(ctx context.Context, r Request) (Response, error) {
	r.Version = ProtocolVersion
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return Response{}, fmt.Errorf("reach the banger helper on %s: %w (is banger-helper.service running?)", c.Socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	if err := json.NewEncoder(conn).Encode(r); err != nil {
		return Response{}, err
	}
	_ = conn.(*net.UnixConn).CloseWrite()
	var resp Response
	if err := json.NewDecoder(io.LimitReader(conn, MaxRequest)).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("read the banger helper's answer: %w", err)
	}
	if !resp.OK {
		return resp, &Error{Code: resp.Code, Msg: resp.Error}
	}
	return resp, nil
}
