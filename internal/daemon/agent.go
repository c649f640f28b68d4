package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"banger/internal/daemon/sshkey"
	"banger/internal/daemon/vmm"
	"banger/internal/guest/client"
	"banger/internal/store"
)

// waitReady polls the agent until it answers and reports ready, the VMM
// exits, or the bound passes.
func (vm *vmManager) waitReady(ctx context.Context, link vmm.AgentLink, m vmm.Machine, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	c := vmm.Client(link)
	var last error
	for {
		select {
		case <-m.Done():
			return errors.New("the VMM exited while the guest was booting")
		default:
		}
		hctx, hcancel := context.WithTimeout(ctx, readyAsk)
		h, err := c.Health(hctx)
		unanswered := err != nil && hctx.Err() != nil && ctx.Err() == nil
		hcancel()
		if err == nil && h.Ready {
			return nil
		}
		if unanswered {
			// An asking that got no answer at all may sit on a session
			// the guest no longer reads: a guest resumed from a snapshot
			// reopens its serial port when it sees the new VMM's socket,
			// and what the host sent before that is lost, leaving both
			// ends of the multiplexed session waiting. Closing the link
			// makes the next asking dial a fresh session.
			link.Close()
		}
		if err == nil {
			err = errors.New("the agent answers but the guest is not ready yet")
		}
		last = err
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the guest agent was not ready within %s (last: %v)", bound, last)
			}
			return ctx.Err()
		case <-m.Done():
			return errors.New("the VMM exited while the guest was booting")
		case <-time.After(readyPoll):
		}
	}
}

// readyPoll is how often the agent is asked whether the guest is ready;
// each asking is one small request on an open connection. readyAsk bounds
// one asking.
const (
	readyPoll = 50 * time.Millisecond
	readyAsk  = 5 * time.Second
)

func (vm *vmManager) recordHostKeys(ctx context.Context, v store.VM, link vmm.AgentLink) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	keys, err := guestHostKeys(ctx, vmm.Client(link))
	if err != nil {
		return err
	}
	return sshkey.WriteKnownHosts(vm.knownHosts(v.ID), []string{v.Name + ".banger"}, keys)
}

// maxHostKeysOutput bounds what bangerd takes of the guest's answer to
// listing its host keys (a few hundred bytes each).
const maxHostKeysOutput = 64 << 10

// guestHostKeys returns the lines of the guest's SSH host public keys.
// The guest is not trusted: it is read up to maxHostKeysOutput bytes.
func guestHostKeys(ctx context.Context, c *client.Client) ([]string, error) {
	out := &cappedBuffer{max: maxHostKeysOutput}
	st, err := c.Exec(ctx, client.ExecRequest{Argv: []string{"/bin/sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null"}}, nil, out, io.Discard)
	if err != nil {
		return nil, err
	}
	if st.Code != 0 && out.b.Len() == 0 {
		return nil, errors.New("the guest has no SSH host keys")
	}
	return strings.Split(out.b.String(), "\n"), nil
}

// cappedBuffer keeps what is written to it, up to max bytes; a write
// beyond fails.
type cappedBuffer struct {
	b   strings.Builder
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.b.Len()+len(p) > c.max {
		return 0, fmt.Errorf("the guest sent more than %d bytes", c.max)
	}
	return c.b.Write(p)
}
