package dnsd

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// forward relays query to the upstreams in order and returns the first good
// answer with the client's ID. An upstream that times out, fails, or answers
// SERVFAIL or REFUSED is passed over; such an answer is relayed only when no
// upstream does better. With no answer at all the client gets SERVFAIL.
func (s *Server) forward(ctx context.Context, query []byte, req *request) []byte {
	var fallback []byte
	for _, up := range s.cfg.Upstreams {
		if ctx.Err() != nil {
			break
		}
		resp, err := s.exchange(ctx, up, query, req.q)
		if err != nil {
			continue
		}
		binary.BigEndian.PutUint16(resp, req.hdr.ID)
		if len(resp) > req.limit {
			resp = truncated(resp, req)
		}
		switch dnsmessage.RCode(resp[3] & 0x0f) {
		case dnsmessage.RCodeServerFailure, dnsmessage.RCodeRefused:
			if fallback == nil {
				fallback = resp
			}
			continue
		}
		return resp
	}
	if fallback != nil {
		return fallback
	}
	return req.reply(dnsmessage.RCodeServerFailure, false, nil, nil)
}

// truncated replaces an answer too big for the client with its header and
// the question, TC set.
func truncated(resp []byte, req *request) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(resp)
	if err != nil {
		return req.reply(dnsmessage.RCodeServerFailure, false, nil, nil)
	}
	short := *req
	short.limit = 0 // forces the cut
	return short.reply(hdr.RCode, hdr.Authoritative, nil, nil)
}

// exchange asks one upstream: over UDP, then over TCP when the UDP answer is
// truncated. The query goes out with a fresh random ID, and only an answer
// with that ID and the same question is accepted, so that a forged or stale
// datagram is ignored. The attempt is bounded by the upstream timeout.
func (s *Server) exchange(ctx context.Context, up netip.AddrPort, query []byte, q dnsmessage.Question) ([]byte, error) {
	out := append([]byte(nil), query...)
	id := uint16(rand.Uint32())
	binary.BigEndian.PutUint16(out, id)

	uctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	resp, err := exchangeOnce(uctx, "udp", up, out, id, q)
	cancel()
	if err != nil {
		return nil, err
	}
	if resp[2]&0x02 == 0 { // not truncated
		return resp, nil
	}
	tctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return exchangeOnce(tctx, "tcp", up, out, id, q)
}

// exchangeOnce sends out to up over network ("udp" or "tcp") and waits for a
// matching answer until ctx ends.
func exchangeOnce(ctx context.Context, network string, up netip.AddrPort, out []byte, id uint16, q dnsmessage.Question) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	if network == "tcp" {
		msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(out)), uint16(len(out)))
		if _, err := c.Write(append(msg, out...)); err != nil {
			return nil, err
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, err
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			return nil, err
		}
		if !answers(resp, id, q) {
			return nil, fmt.Errorf("dnsd: upstream %s sent an answer that does not match the query", up)
		}
		return resp, nil
	}

	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err // timeout, or ICMP port unreachable
		}
		if answers(buf[:n], id, q) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// answers reports whether resp is a reply with ID id to question q. A reply
// without a question section is accepted only as an error (some servers
// drop the question from FORMERR and the like).
func answers(resp []byte, id uint16, q dnsmessage.Question) bool {
	var p dnsmessage.Parser
	hdr, err := p.Start(resp)
	if err != nil || hdr.ID != id || !hdr.Response {
		return false
	}
	rq, err := p.Question()
	if err == dnsmessage.ErrSectionDone {
		return hdr.RCode != dnsmessage.RCodeSuccess
	}
	return err == nil && rq.Type == q.Type && rq.Class == q.Class &&
		lowerASCII(rq.Name.String()) == lowerASCII(q.Name.String())
}
