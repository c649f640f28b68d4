package dnsd

import (
	"context"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// UDP payload sizes: 512 without EDNS (RFC 1035); with EDNS the client's
// size, capped at 1232 to stay clear of fragmentation (DNS flag day 2020).
const (
	minUDPSize = 512
	maxUDPSize = 1232
)

// request is what handle learned from a query.
type request struct {
	hdr   dnsmessage.Header
	q     dnsmessage.Question
	hasQ  bool
	edns  bool
	limit int // largest reply the client accepts
}

// handle answers one query and returns the reply, or nil to send nothing
// (the bytes are not a DNS query at all). overTCP lifts the UDP size limit.
func (s *Server) handle(ctx context.Context, query []byte, overTCP bool) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil || hdr.Response {
		return nil // too short for a header, or a reply: never answer those
	}
	req := &request{hdr: hdr, limit: minUDPSize}
	if overTCP {
		req.limit = 65535
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return req.reply(dnsmessage.RCodeFormatError, false, nil, nil)
	}
	req.q, req.hasQ = qs[0], true
	if p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return req.reply(dnsmessage.RCodeFormatError, false, nil, nil)
	}
	for {
		rh, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil || p.SkipAdditional() != nil {
			return req.reply(dnsmessage.RCodeFormatError, false, nil, nil)
		}
		if rh.Type != dnsmessage.TypeOPT {
			continue
		}
		if req.edns {
			return req.reply(dnsmessage.RCodeFormatError, false, nil, nil) // two OPT records (RFC 6891 6.1.1)
		}
		req.edns = true
		if !overTCP {
			req.limit = min(max(int(rh.Class), minUDPSize), maxUDPSize)
		}
	}
	if hdr.OpCode != 0 {
		return req.reply(dnsmessage.RCodeNotImplemented, false, nil, nil)
	}

	name := strings.TrimSuffix(lowerASCII(req.q.Name.String()), ".")
	if name == s.domain || strings.HasSuffix(name, "."+s.domain) {
		return s.answerLocal(req, strings.TrimSuffix(strings.TrimSuffix(name, s.domain), "."))
	}
	return s.forward(ctx, query, req)
}

// answerLocal answers a question about label.<domain> with authority.
func (s *Server) answerLocal(req *request, label string) []byte {
	q := req.q
	if q.Class != dnsmessage.ClassINET && q.Class != dnsmessage.ClassANY {
		return req.reply(dnsmessage.RCodeRefused, false, nil, nil)
	}
	if label == "" {
		// The apex exists but has no addresses.
		return req.reply(dnsmessage.RCodeSuccess, true, nil, &s.soa)
	}
	addr, ok := s.cfg.Lookup(label)
	if !ok || !addr.IsValid() {
		return req.reply(dnsmessage.RCodeNameError, true, nil, &s.soa)
	}
	addr = addr.Unmap()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: s.ttl}
	var answers []dnsmessage.Resource
	switch {
	case addr.Is4() && (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL):
		answers = append(answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: addr.As4()}})
	case addr.Is6() && (q.Type == dnsmessage.TypeAAAA || q.Type == dnsmessage.TypeALL):
		answers = append(answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: addr.As16()}})
	}
	if len(answers) == 0 {
		// The name exists, just not with this type: NOERROR, no answers.
		return req.reply(dnsmessage.RCodeSuccess, true, nil, &s.soa)
	}
	return req.reply(dnsmessage.RCodeSuccess, true, answers, nil)
}

// reply builds a response to req. soa, when set, goes in the authority
// section so that resolvers cache the negative answer for the TTL only. A
// reply that does not fit the client's limit is cut down to header and
// question, with TC set, so the client retries over TCP.
func (req *request) reply(rcode dnsmessage.RCode, auth bool, answers []dnsmessage.Resource, soa *dnsmessage.Resource) []byte {
	m := dnsmessage.Message{
		Header: dnsmessage.Header{
			ID:                 req.hdr.ID,
			Response:           true,
			OpCode:             req.hdr.OpCode,
			Authoritative:      auth,
			RecursionDesired:   req.hdr.RecursionDesired,
			RecursionAvailable: true,
			RCode:              rcode,
		},
		Answers: answers,
	}
	if req.hasQ {
		m.Questions = []dnsmessage.Question{req.q}
	}
	if soa != nil {
		m.Authorities = []dnsmessage.Resource{*soa}
	}
	if req.edns {
		var rh dnsmessage.ResourceHeader
		rh.SetEDNS0(maxUDPSize, dnsmessage.RCodeSuccess, false)
		m.Additionals = []dnsmessage.Resource{{Header: rh, Body: &dnsmessage.OPTResource{}}}
	}
	out, err := m.Pack()
	if err == nil && len(out) <= req.limit {
		return out
	}
	m.Header.Truncated = true
	m.Answers, m.Authorities = nil, nil
	out, err = m.Pack()
	if err != nil {
		return nil // cannot happen for a question that parsed
	}
	return out
}
