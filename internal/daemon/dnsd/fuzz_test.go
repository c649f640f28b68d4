package dnsd

import (
	"context"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzHandle feeds arbitrary bytes to the query handler. It must never
// panic, and whatever it sends back must be a reply with the query's ID that
// fits the size the client can take.
func FuzzHandle(f *testing.F) {
	f.Add(packQuery(f, 1, "web.banger.", dnsmessage.TypeA), false)
	f.Add(packQuery(f, 2, "WEB.banger.", dnsmessage.TypeAAAA, withEDNS(4096)), false)
	f.Add(packQuery(f, 3, "nope.banger.", dnsmessage.TypeMX), true)
	f.Add(packQuery(f, 4, "example.org.", dnsmessage.TypeA, withEDNS(100), withEDNS(1232)), false)
	f.Add(packQuery(f, 5, "banger.", dnsmessage.TypeALL), true)
	f.Add([]byte{0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, false)
	f.Add([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}, false)
	f.Add([]byte("garbage"), true)

	s := &Server{
		cfg:    Config{Lookup: lookupVMs}, // no upstreams: forwarding answers SERVFAIL without network
		domain: DefaultDomain,
		ttl:    5,
	}
	f.Fuzz(func(t *testing.T, query []byte, overTCP bool) {
		resp := s.handle(context.Background(), query, overTCP)
		if resp == nil {
			return
		}
		limit := 65535
		if !overTCP {
			limit = maxUDPSize
		}
		if len(resp) > limit {
			t.Fatalf("reply of %d bytes, over %d", len(resp), limit)
		}
		var p dnsmessage.Parser
		h, err := p.Start(resp)
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if !h.Response || h.ID != uint16(query[0])<<8|uint16(query[1]) {
			t.Fatalf("reply header %+v does not answer query ID %x", h, query[:2])
		}
	})
}
