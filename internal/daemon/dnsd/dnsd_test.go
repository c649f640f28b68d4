package dnsd

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// ---- helpers ---------------------------------------------------------------

var vms = map[string]netip.Addr{
	"web":  netip.MustParseAddr("10.200.0.2"),
	"host": netip.MustParseAddr("10.200.0.1"),
	"six":  netip.MustParseAddr("fd00::6"),
}

func lookupVMs(name string) (netip.Addr, bool) {
	a, ok := vms[name]
	return a, ok
}

// start runs a responder on 127.0.0.1 until the test ends and checks that
// Serve returns nil after cancellation.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = netip.MustParseAddrPort("127.0.0.1:0")
	if cfg.Lookup == nil {
		cfg.Lookup = lookupVMs
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	})
	return s
}

type queryOpt func(*dnsmessage.Message)

func withEDNS(size int) queryOpt {
	return func(m *dnsmessage.Message) {
		var rh dnsmessage.ResourceHeader
		rh.SetEDNS0(size, dnsmessage.RCodeSuccess, false)
		m.Additionals = append(m.Additionals, dnsmessage.Resource{Header: rh, Body: &dnsmessage.OPTResource{}})
	}
}

func packQuery(t testing.TB, id uint16, name string, typ dnsmessage.Type, opts ...queryOpt) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}},
	}
	for _, o := range opts {
		o(&m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ask sends raw over network ("udp" or "tcp") to addr and returns the raw reply.
func ask(t testing.TB, network string, addr netip.AddrPort, raw []byte) ([]byte, error) {
	c, err := net.Dial(network, addr.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a safety net, not an assertion
	if network == "udp" {
		if _, err := c.Write(raw); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		return buf[:n], err
	}
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(raw))), raw...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	resp := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err = io.ReadFull(c, resp)
	return resp, err
}

func query(t testing.TB, network string, addr netip.AddrPort, id uint16, name string, typ dnsmessage.Type, opts ...queryOpt) dnsmessage.Message {
	t.Helper()
	raw, err := ask(t, network, addr, packQuery(t, id, name, typ, opts...))
	if err != nil {
		t.Fatalf("%s query %s %v: %v", network, name, typ, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(raw); err != nil {
		t.Fatalf("reply to %s %v does not parse: %v", name, typ, err)
	}
	if m.Header.ID != id || !m.Header.Response {
		t.Fatalf("reply to %s: ID %#x response=%v, want ID %#x response=true", name, m.Header.ID, m.Header.Response, id)
	}
	return m
}

func aRecords(m dnsmessage.Message) []netip.Addr {
	var out []netip.Addr
	for _, r := range m.Answers {
		if a, ok := r.Body.(*dnsmessage.AResource); ok {
			out = append(out, netip.AddrFrom4(a.A))
		}
	}
	return out
}

// upstream is a fake resolver on 127.0.0.1, UDP and TCP on one port.
type upstream struct {
	addr    netip.AddrPort
	udpHits atomic.Int32
	tcpHits atomic.Int32
	seenIDs chan uint16
}

type upstreamMode int

const (
	answerA     upstreamMode = iota // answers A with answerIP
	silent                          // reads and never answers
	truncateUDP                     // TC over UDP, manyA records over TCP
	forgedFirst                     // a reply with a wrong ID first, then the real one
	refuse                          // REFUSED
)

const manyA = 100 // records in the TCP answer; far over 512 bytes

func startUpstream(t *testing.T, mode upstreamMode, answerIP string) *upstream {
	t.Helper()
	var pc *net.UDPConn
	var ln *net.TCPListener
	for {
		var err error
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(pc.LocalAddr().(*net.UDPAddr).AddrPort()))
		if err == nil {
			break
		}
		pc.Close()
	}
	u := &upstream{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), seenIDs: make(chan uint16, 1000)}
	ip := netip.MustParseAddr(answerIP).As4()

	reply := func(raw []byte, tcp bool) []byte {
		var q dnsmessage.Message
		if err := q.Unpack(raw); err != nil || len(q.Questions) != 1 {
			return nil
		}
		select {
		case u.seenIDs <- q.Header.ID:
		default:
		}
		m := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: q.Header.ID, Response: true, RecursionAvailable: true},
			Questions: q.Questions,
		}
		rh := dnsmessage.ResourceHeader{Name: q.Questions[0].Name, Class: dnsmessage.ClassINET, TTL: 60}
		switch {
		case mode == refuse:
			m.Header.RCode = dnsmessage.RCodeRefused
		case mode == truncateUDP && !tcp:
			m.Header.Truncated = true
		case mode == truncateUDP:
			for i := range manyA {
				m.Answers = append(m.Answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: [4]byte{198, 51, 100, byte(i)}}})
			}
		default:
			m.Answers = []dnsmessage.Resource{{Header: rh, Body: &dnsmessage.AResource{A: ip}}}
		}
		b, _ := m.Pack()
		return b
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			u.udpHits.Add(1)
			if mode == silent {
				continue
			}
			b := reply(buf[:n], false)
			if b == nil {
				continue
			}
			if mode == forgedFirst {
				forged := append([]byte(nil), b...)
				binary.BigEndian.PutUint16(forged, binary.BigEndian.Uint16(b)+1)
				forged[len(forged)-1] ^= 0xff // a different address, too
				pc.WriteToUDPAddrPort(forged, from)
			}
			pc.WriteToUDPAddrPort(b, from)
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.tcpHits.Add(1)
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err == nil && mode != silent {
				raw := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, raw); err == nil {
					if b := reply(raw, true); b != nil {
						c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
					}
				}
			}
			c.Close()
		}
	})
	t.Cleanup(func() {
		pc.Close()
		ln.Close()
		wg.Wait()
	})
	return u
}

// deadPort returns a 127.0.0.1 UDP port with nothing listening.
func deadPort(t *testing.T) netip.AddrPort {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	a := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return a
}

// ---- local zone ------------------------------------------------------------

func TestLocalAnswers(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	s := start(t, Config{Lookup: func(name string) (netip.Addr, bool) {
		mu.Lock()
		asked = append(asked, name)
		mu.Unlock()
		return lookupVMs(name)
	}})

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			m := query(t, network, s.Addr(), 0x1234, "web.banger.", dnsmessage.TypeA)
			if m.Header.RCode != dnsmessage.RCodeSuccess || !m.Header.Authoritative {
				t.Fatalf("web.banger A: rcode %v aa=%v, want success and authoritative", m.Header.RCode, m.Header.Authoritative)
			}
			if got := aRecords(m); len(got) != 1 || got[0] != vms["web"] {
				t.Fatalf("web.banger A = %v, want [%v]", got, vms["web"])
			}
			if ttl := m.Answers[0].Header.TTL; ttl != 5 {
				t.Fatalf("TTL = %d, want 5 (the default)", ttl)
			}

			// Case does not matter.
			m = query(t, network, s.Addr(), 2, "HoSt.BANGER.", dnsmessage.TypeA)
			if got := aRecords(m); len(got) != 1 || got[0] != vms["host"] {
				t.Fatalf("HoSt.BANGER A = %v, want [%v]", got, vms["host"])
			}

			// AAAA for a known IPv4-only name: NOERROR, nothing, SOA for negative caching.
			m = query(t, network, s.Addr(), 3, "web.banger.", dnsmessage.TypeAAAA)
			if m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 0 || len(m.Authorities) != 1 {
				t.Fatalf("web.banger AAAA: rcode %v, %d answers, %d authorities; want success, 0, 1", m.Header.RCode, len(m.Answers), len(m.Authorities))
			}
			if soa, ok := m.Authorities[0].Body.(*dnsmessage.SOAResource); !ok || soa.MinTTL != 5 {
				t.Fatalf("authority is %#v, want an SOA with MinTTL 5", m.Authorities[0].Body)
			}

			// An IPv6 address is given out as AAAA, not A.
			m = query(t, network, s.Addr(), 4, "six.banger.", dnsmessage.TypeAAAA)
			if len(m.Answers) != 1 {
				t.Fatalf("six.banger AAAA: %d answers, want 1", len(m.Answers))
			}
			if a, ok := m.Answers[0].Body.(*dnsmessage.AAAAResource); !ok || netip.AddrFrom16(a.AAAA) != vms["six"] {
				t.Fatalf("six.banger AAAA = %#v, want %v", m.Answers[0].Body, vms["six"])
			}

			// Unknown names.
			for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeMX} {
				m = query(t, network, s.Addr(), 5, "nope.banger.", typ)
				if m.Header.RCode != dnsmessage.RCodeNameError || !m.Header.Authoritative {
					t.Fatalf("nope.banger %v: rcode %v aa=%v, want NXDOMAIN authoritative", typ, m.Header.RCode, m.Header.Authoritative)
				}
			}

			// The apex exists without addresses.
			m = query(t, network, s.Addr(), 6, "banger.", dnsmessage.TypeA)
			if m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 0 {
				t.Fatalf("banger. A: rcode %v, %d answers; want success, none", m.Header.RCode, len(m.Answers))
			}

			// With EDNS the reply carries an OPT record.
			m = query(t, network, s.Addr(), 7, "web.banger.", dnsmessage.TypeA, withEDNS(4096))
			if len(m.Additionals) != 1 || m.Additionals[0].Header.Type != dnsmessage.TypeOPT {
				t.Fatalf("EDNS query: additionals %v, want one OPT", m.Additionals)
			}
		})
	}

	mu.Lock()
	defer mu.Unlock()
	for _, name := range asked {
		if name != "web" && name != "host" && name != "six" && name != "nope" {
			t.Errorf("Lookup got %q; want a bare, lower-case label", name)
		}
	}
}

func TestOtherDomain(t *testing.T) {
	s := start(t, Config{Domain: ".VMs.Test.", Lookup: lookupVMs})
	m := query(t, "udp", s.Addr(), 1, "web.vms.test.", dnsmessage.TypeA)
	if got := aRecords(m); len(got) != 1 || got[0] != vms["web"] {
		t.Fatalf("web.vms.test A = %v, want [%v]", got, vms["web"])
	}
	// banger is now an ordinary name: forwarded, and with no upstream, SERVFAIL.
	m = query(t, "udp", s.Addr(), 2, "web.banger.", dnsmessage.TypeA)
	if m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Fatalf("web.banger with domain vms.test: rcode %v, want SERVFAIL", m.Header.RCode)
	}
}

// ---- forwarding ------------------------------------------------------------

func TestForwardPreservesID(t *testing.T) {
	up := startUpstream(t, answerA, "192.0.2.7")
	s := start(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	for _, network := range []string{"udp", "tcp"} {
		m := query(t, network, s.Addr(), 0xbeef, "example.org.", dnsmessage.TypeA)
		if got := aRecords(m); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.7") {
			t.Fatalf("%s: example.org A = %v, want [192.0.2.7] from the upstream", network, got)
		}
		if m.Header.Authoritative {
			t.Fatalf("%s: forwarded answer claims authority", network)
		}
	}
}

func TestForwardIgnoresForgedReply(t *testing.T) {
	up := startUpstream(t, forgedFirst, "192.0.2.8")
	s := start(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	m := query(t, "udp", s.Addr(), 9, "example.org.", dnsmessage.TypeA)
	if got := aRecords(m); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.8") {
		t.Fatalf("example.org A = %v, want [192.0.2.8]; the datagram with the wrong ID must be ignored", got)
	}
}

func TestForwardNextUpstreamOnTimeout(t *testing.T) {
	dead := startUpstream(t, silent, "192.0.2.1")
	good := startUpstream(t, answerA, "192.0.2.2")
	s := start(t, Config{Upstreams: []netip.AddrPort{dead.addr, good.addr}, Timeout: 200 * time.Millisecond})
	m := query(t, "udp", s.Addr(), 10, "example.org.", dnsmessage.TypeA)
	if got := aRecords(m); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("example.org A = %v, want [192.0.2.2] from the second upstream", got)
	}
	if dead.udpHits.Load() == 0 {
		t.Fatal("the first upstream was never asked")
	}
}

func TestForwardNextUpstreamOnRefused(t *testing.T) {
	bad := startUpstream(t, refuse, "192.0.2.1")
	good := startUpstream(t, answerA, "192.0.2.3")
	s := start(t, Config{Upstreams: []netip.AddrPort{bad.addr, good.addr}})
	m := query(t, "udp", s.Addr(), 11, "example.org.", dnsmessage.TypeA)
	if got := aRecords(m); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.3") {
		t.Fatalf("example.org A = %v, want [192.0.2.3] from the second upstream", got)
	}
	// Only refusals: the refusal is relayed.
	s2 := start(t, Config{Upstreams: []netip.AddrPort{bad.addr}})
	m = query(t, "udp", s2.Addr(), 12, "example.org.", dnsmessage.TypeA)
	if m.Header.RCode != dnsmessage.RCodeRefused {
		t.Fatalf("rcode %v, want the upstream's REFUSED", m.Header.RCode)
	}
}

func TestForwardAllDownServfail(t *testing.T) {
	silentUp := startUpstream(t, silent, "192.0.2.1")
	s := start(t, Config{Upstreams: []netip.AddrPort{deadPort(t), silentUp.addr}, Timeout: 200 * time.Millisecond})
	for _, network := range []string{"udp", "tcp"} {
		m := query(t, network, s.Addr(), 13, "example.org.", dnsmessage.TypeA)
		if m.Header.RCode != dnsmessage.RCodeServerFailure {
			t.Fatalf("%s: rcode %v, want SERVFAIL when no upstream answers", network, m.Header.RCode)
		}
		if len(m.Questions) != 1 || m.Questions[0].Name.String() != "example.org." {
			t.Fatalf("%s: SERVFAIL questions %v, want the query's question", network, m.Questions)
		}
	}
	if silentUp.udpHits.Load() == 0 {
		t.Fatal("the second upstream was never asked")
	}

	none := start(t, Config{})
	if m := query(t, "udp", none.Addr(), 14, "example.org.", dnsmessage.TypeA); m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Fatalf("no upstreams: rcode %v, want SERVFAIL", m.Header.RCode)
	}
}

func TestForwardTruncatedRetriesTCP(t *testing.T) {
	up := startUpstream(t, truncateUDP, "192.0.2.1")
	s := start(t, Config{Upstreams: []netip.AddrPort{up.addr}})

	// Over TCP the client gets every record, fetched over TCP from upstream.
	m := query(t, "tcp", s.Addr(), 15, "big.example.", dnsmessage.TypeA)
	if n := len(aRecords(m)); n != manyA || m.Header.Truncated {
		t.Fatalf("TCP: %d records truncated=%v, want %d and not truncated", n, m.Header.Truncated, manyA)
	}
	if up.tcpHits.Load() == 0 {
		t.Fatal("upstream was never asked over TCP after its truncated UDP answer")
	}

	// Over UDP the answer does not fit: TC with the question, so the client retries over TCP.
	for _, opts := range [][]queryOpt{nil, {withEDNS(4096)}} {
		raw, err := ask(t, "udp", s.Addr(), packQuery(t, 16, "big.example.", dnsmessage.TypeA, opts...))
		if err != nil {
			t.Fatal(err)
		}
		limit := 512
		if opts != nil {
			limit = 1232
		}
		if len(raw) > limit {
			t.Fatalf("UDP reply is %d bytes, over the client's limit %d", len(raw), limit)
		}
		var m dnsmessage.Message
		if err := m.Unpack(raw); err != nil {
			t.Fatal(err)
		}
		if !m.Header.Truncated || m.Header.ID != 16 || len(m.Questions) != 1 {
			t.Fatalf("UDP reply: truncated=%v id=%d questions=%d; want TC, id 16, the question", m.Header.Truncated, m.Header.ID, len(m.Questions))
		}
	}
}

// ---- robustness ------------------------------------------------------------

func TestMalformedQueries(t *testing.T) {
	up := startUpstream(t, answerA, "192.0.2.9")
	s := start(t, Config{Upstreams: []netip.AddrPort{up.addr}})

	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	garbage := [][]byte{
		{},
		{0x01},
		[]byte("hello, this is not DNS at all........"),
		{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'e', 'b', 0, 0, 1, 0, 1}, // a response: not answered
		{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1},             // pointer loop
		{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63},                                 // label past the end
	}
	for _, g := range garbage {
		c.Write(g)
	}

	// Header says one question but there is none: FORMERR with the ID.
	raw, err := ask(t, "udp", s.Addr(), []byte{0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(raw); err != nil || m.Header.ID != 0xabcd || m.Header.RCode != dnsmessage.RCodeFormatError {
		t.Fatalf("truncated question: %v %+v, want FORMERR with ID 0xabcd", err, m.Header)
	}

	// Two questions: FORMERR.
	two := dnsmessage.Message{Header: dnsmessage.Header{ID: 77}, Questions: []dnsmessage.Question{
		{Name: dnsmessage.MustNewName("web.banger."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
		{Name: dnsmessage.MustNewName("host.banger."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
	}}
	b, _ := two.Pack()
	if raw, err = ask(t, "udp", s.Addr(), b); err != nil {
		t.Fatal(err)
	}
	if err := m.Unpack(raw); err != nil || m.Header.RCode != dnsmessage.RCodeFormatError || m.Header.ID != 77 {
		t.Fatalf("two questions: %v %+v, want FORMERR with ID 77", err, m.Header)
	}

	// TCP: a length prefix with too few bytes, then hang up.
	tc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0x10, 0x00, 1, 2, 3})
	tc.Close()
	// TCP: garbage of the stated length; the server hangs up on it.
	raw, err = ask(t, "tcp", s.Addr(), []byte("not dns"))
	if err == nil {
		t.Fatalf("garbage over TCP got a reply %x, want the connection closed", raw)
	}

	// The server still answers, locally and forwarded, over both transports.
	for _, network := range []string{"udp", "tcp"} {
		if got := aRecords(query(t, network, s.Addr(), 1, "web.banger.", dnsmessage.TypeA)); len(got) != 1 {
			t.Fatalf("%s after garbage: web.banger A = %v", network, got)
		}
		if got := aRecords(query(t, network, s.Addr(), 2, "example.org.", dnsmessage.TypeA)); len(got) != 1 {
			t.Fatalf("%s after garbage: example.org A = %v", network, got)
		}
	}
}

func TestParallelQueries(t *testing.T) {
	up := startUpstream(t, answerA, "192.0.2.10")
	s := start(t, Config{Upstreams: []netip.AddrPort{up.addr}})
	const n = 100
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			network, name, want := "udp", "web.banger.", vms["web"]
			if i%2 == 1 {
				name, want = "example.org.", netip.MustParseAddr("192.0.2.10")
			}
			if i%5 == 0 {
				network = "tcp"
			}
			raw, err := ask(t, network, s.Addr(), packQuery(t, uint16(i), name, dnsmessage.TypeA))
			if err != nil {
				errs <- err
				return
			}
			var m dnsmessage.Message
			if err := m.Unpack(raw); err != nil {
				errs <- err
				return
			}
			if got := aRecords(m); m.Header.ID != uint16(i) || len(got) != 1 || got[0] != want {
				errs <- errors.New("wrong answer to " + name)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// ---- lifecycle and configuration ---------------------------------------------

func TestServeStopsAndServeTwice(t *testing.T) {
	s, err := Listen(Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Lookup: lookupVMs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	query(t, "udp", s.Addr(), 1, "web.banger.", dnsmessage.TypeA)
	if err := s.Serve(ctx); err == nil {
		t.Fatal("a second Serve succeeded, want an error")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v, want nil", err)
	}
	// The sockets are gone: the port can be bound again.
	again, err := Listen(Config{Addr: s.Addr(), Lookup: lookupVMs})
	if err != nil {
		t.Fatalf("rebinding %s after Serve returned: %v", s.Addr(), err)
	}
	again.Close()
}

func TestListenRejectsBadConfig(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	bad := map[string]Config{
		"no address":       {Lookup: lookupVMs},
		"no lookup":        {Addr: lo},
		"upstream no port": {Addr: lo, Lookup: lookupVMs, Upstreams: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 0)}},
		"bad domain":       {Addr: lo, Lookup: lookupVMs, Domain: "a..b"},
		"negative ttl":     {Addr: lo, Lookup: lookupVMs, TTL: -time.Second},
	}
	for name, cfg := range bad {
		if s, err := Listen(cfg); err == nil {
			s.Close()
			t.Errorf("%s: Listen succeeded, want an error", name)
		}
	}

	// An upstream that is the responder itself would loop.
	s, err := Listen(Config{Addr: lo, Lookup: lookupVMs})
	if err != nil {
		t.Fatal(err)
	}
	self := s.Addr()
	s.Close()
	if s, err := Listen(Config{Addr: self, Lookup: lookupVMs, Upstreams: []netip.AddrPort{self}}); err == nil {
		s.Close()
		t.Fatal("Listen with itself as upstream succeeded, want an error")
	}
}

func TestClients(t *testing.T) {
	s := &Server{cfg: Config{Clients: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24")}}}
	for addr, want := range map[string]bool{
		"10.200.0.5":        true,
		"::ffff:10.200.0.5": true,
		"10.201.0.5":        false,
		"127.0.0.1":         false,
	} {
		if got := s.allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("allowed(%s) = %v, want %v", addr, got, want)
		}
	}
	if !(&Server{}).allowed(netip.MustParseAddr("192.0.2.1")) {
		t.Error("with no Clients every source must be allowed")
	}
}
