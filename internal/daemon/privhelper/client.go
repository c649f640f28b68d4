package privhelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"banger/internal/daemon/privops"
)

// Client asks the helper for privileged work. It is the privops.Ops of a
// bangerd that runs as a user.
type Client struct {
	Socket string
	// Unreachable, when set, is called each time a request finds no
	// helper listening on Socket.
	Unreachable func()
}

var _ privops.Ops = Client{}

// Do sends one request and returns the answer, or the helper's refusal as
// an *Error.
func (c Client) Do(ctx context.Context, r Request) (Response, error) {
	r.Version = ProtocolVersion
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if c.Unreachable != nil && ctx.Err() == nil {
			c.Unreachable()
		}
		return Response{}, fmt.Errorf("reach the banger helper on %s: %w (is banger-helper.service running? see docs/install.md)", c.Socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		// Longer than the helper's own bound on a request, so that its
		// answer, even that the request timed out, arrives in time.
		_ = conn.SetDeadline(time.Now().Add(RequestTimeout + AnswerTimeout))
	}
	// The helper refuses some callers before it reads anything; then the
	// write fails but its answer is already there to read.
	werr := json.NewEncoder(conn).Encode(r)
	if werr == nil {
		_ = conn.(*net.UnixConn).CloseWrite()
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(conn, MaxRequest)).Decode(&resp); err != nil {
		if werr != nil {
			return Response{}, fmt.Errorf("send %s to the banger helper: %w", r.Op, werr)
		}
		return Response{}, fmt.Errorf("read the banger helper's answer to %s: %w", r.Op, err)
	}
	if !resp.OK {
		return resp, &Error{Code: resp.Code, Msg: resp.Error}
	}
	return resp, nil
}

// Hello checks that the helper answers and speaks this build's protocol.
// Its answer has the helper's build version and the state dir in which it
// accepts the caller's files.
func (c Client) Hello(ctx context.Context) (Response, error) {
	r, err := c.Do(ctx, Request{Op: OpHello})
	if err != nil {
		return r, err
	}
	if r.Protocol != ProtocolVersion {
		return r, fmt.Errorf("the banger helper on %s (version %s) speaks protocol %d, this bangerd %d: restart banger-helper.service after upgrading", c.Socket, r.Version, r.Protocol, ProtocolVersion)
	}
	return r, nil
}

func netRequest(op string, n privops.NetSpec) Request {
	return Request{Op: op, Bridge: n.Bridge, Subnet: n.Subnet.String(), TapPrefix: n.TapPrefix, Table: n.Table, DNSPort: int(n.DNSPort)}
}

func (c Client) EnsureNetwork(ctx context.Context, n privops.NetSpec) error {
	_, err := c.Do(ctx, netRequest(OpEnsureNetwork, n))
	return err
}

func (c Client) TeardownNetwork(ctx context.Context, n privops.NetSpec) error {
	_, err := c.Do(ctx, netRequest(OpTeardownNetwork, n))
	return err
}

func (c Client) CreateTap(ctx context.Context, n privops.NetSpec, tap string) error {
	r := netRequest(OpCreateTap, n)
	r.Tap = tap
	_, err := c.Do(ctx, r)
	return err
}

func (c Client) DeleteTap(ctx context.Context, n privops.NetSpec, tap string) error {
	r := netRequest(OpDeleteTap, n)
	r.Tap = tap
	_, err := c.Do(ctx, r)
	return err
}

func (c Client) Publish(ctx context.Context, n privops.NetSpec, p privops.Publish) error {
	r := netRequest(OpPublish, n)
	r.VMID, r.HostPort, r.Guest = p.VMID, int(p.HostPort), p.Guest.String()
	_, err := c.Do(ctx, r)
	return err
}

func (c Client) Unpublish(ctx context.Context, n privops.NetSpec, vmID string, hostPort uint16) error {
	r := netRequest(OpUnpublish, n)
	r.VMID, r.HostPort = vmID, int(hostPort)
	_, err := c.Do(ctx, r)
	return err
}

// ErrSnapshotsUnavailable wraps the helper's reason for having no
// snapshots.
var ErrSnapshotsUnavailable = errors.New("device-mapper snapshots are not available")

func (c Client) SnapshotsAvailable(ctx context.Context) error {
	r, err := c.Do(ctx, Request{Op: OpSnapshotsAvailable})
	if err != nil {
		return err
	}
	if r.Reason != "" {
		return fmt.Errorf("%w (the banger helper says: %s)", ErrSnapshotsUnavailable, r.Reason)
	}
	return nil
}

func (c Client) CreateSnapshot(ctx context.Context, name, origin, cowFile string, cowSize int64) (privops.Snapshot, error) {
	r, err := c.Do(ctx, Request{Op: OpCreateSnapshot, Name: name, Origin: origin, COWFile: cowFile, COWSize: cowSize})
	if err != nil {
		return privops.Snapshot{}, err
	}
	if len(r.Snapshots) != 1 {
		return privops.Snapshot{}, fmt.Errorf("the banger helper answered create_snapshot with %d snapshots, not 1", len(r.Snapshots))
	}
	return privops.Snapshot(r.Snapshots[0]), nil
}

func (c Client) RemoveSnapshot(ctx context.Context, name string) error {
	_, err := c.Do(ctx, Request{Op: OpRemoveSnapshot, Name: name})
	return err
}

func (c Client) ListSnapshots(ctx context.Context) ([]privops.Snapshot, error) {
	r, err := c.Do(ctx, Request{Op: OpListSnapshots})
	if err != nil {
		return nil, err
	}
	out := make([]privops.Snapshot, 0, len(r.Snapshots))
	for _, s := range r.Snapshots {
		out = append(out, privops.Snapshot(s))
	}
	return out, nil
}
