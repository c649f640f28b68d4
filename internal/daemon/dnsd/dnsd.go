package dnsd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Lookup resolves a VM (or "host") by name. The name has no trailing dot and
// no domain suffix and is in lower case: for web.banger it is "web".
type Lookup func(name string) (netip.Addr, bool)

// Config describes one responder.
type Config struct {
	// Addr is where to listen, UDP and TCP, for example 10.200.0.1:53. Port 0
	// picks a free port that is the same for both.
	Addr netip.AddrPort
	// Domain is the zone answered locally; DefaultDomain when empty.
	Domain string
	// Lookup answers names inside Domain. Required.
	Lookup Lookup
	// Upstreams get every query outside Domain, tried in order. With none,
	// such queries get SERVFAIL.
	Upstreams []netip.AddrPort
	// Clients, when not empty, limits who is answered (for example the bridge
	// subnet); queries from other addresses are dropped. This keeps the
	// responder from being an open resolver when the gateway address is
	// reachable from elsewhere.
	Clients []netip.Prefix
	// TTL of local answers; DefaultTTL when zero.
	TTL time.Duration
	// Timeout for one upstream attempt; DefaultTimeout when zero.
	Timeout time.Duration
}

// Defaults and limits.
const (
	DefaultDomain  = "banger"
	DefaultTTL     = 5 * time.Second
	DefaultTimeout = 2 * time.Second

	// MaxInFlight bounds the queries being handled at once; further UDP
	// queries wait in the socket buffer.
	MaxInFlight = 64
	// MaxTCPConns bounds open TCP client connections; further ones wait
	// until one closes.
	MaxTCPConns = 32
	// tcpIdle is how long a TCP client may take to send a whole query.
	tcpIdle = 10 * time.Second
)

// Server is a bound responder. Listen creates it, Serve runs it.
type Server struct {
	cfg          Config
	domain       string // lower case, no leading or trailing dot
	ttl          uint32
	queryTimeout time.Duration
	soa          dnsmessage.Resource

	udp *net.UDPConn
	tcp *net.TCPListener

	sem     chan struct{} // queries in flight
	connSem chan struct{} // open TCP connections

	served atomic.Bool
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Listen checks cfg and binds UDP and TCP on cfg.Addr.
func Listen(cfg Config) (*Server, error) {
	if !cfg.Addr.IsValid() {
		return nil, errors.New("dnsd: no listen address given; set Config.Addr (for example 10.200.0.1:53)")
	}
	if cfg.Lookup == nil {
		return nil, errors.New("dnsd: Config.Lookup is nil; the responder needs it to answer NAME." + DefaultDomain)
	}
	if cfg.TTL < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("dnsd: negative TTL (%s) or Timeout (%s); use a positive duration or zero for the default", cfg.TTL, cfg.Timeout)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	domain := lowerASCII(strings.Trim(cfg.Domain, "."))
	if domain == "" {
		domain = DefaultDomain
	}
	apex, err := dnsmessage.NewName(domain + ".")
	if err != nil || strings.Contains(domain, "..") {
		return nil, fmt.Errorf("dnsd: domain %q is not a valid DNS name; use something like %q", cfg.Domain, DefaultDomain)
	}
	for _, up := range cfg.Upstreams {
		if !up.IsValid() || up.Port() == 0 {
			return nil, fmt.Errorf("dnsd: upstream %q is not an address with a port; use for example 192.0.2.53:53", up)
		}
	}
	cfg.Upstreams = append([]netip.AddrPort(nil), cfg.Upstreams...)
	cfg.Clients = append([]netip.Prefix(nil), cfg.Clients...)

	s := &Server{
		cfg:          cfg,
		domain:       domain,
		ttl:          uint32(cfg.TTL / time.Second),
		queryTimeout: time.Duration(2*max(1, len(cfg.Upstreams))) * cfg.Timeout,
		sem:          make(chan struct{}, MaxInFlight),
		connSem:      make(chan struct{}, MaxTCPConns),
		conns:        map[net.Conn]struct{}{},
	}
	s.soa = dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: apex, Class: dnsmessage.ClassINET, TTL: s.ttl},
		Body: &dnsmessage.SOAResource{
			NS:      dnsmessage.MustNewName("host." + domain + "."),
			MBox:    dnsmessage.MustNewName("hostmaster." + domain + "."),
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			MinTTL:  s.ttl,
		},
	}
	if err := s.bind(cfg.Addr); err != nil {
		return nil, err
	}
	for _, up := range cfg.Upstreams {
		if up == s.Addr() {
			s.Close()
			return nil, fmt.Errorf("dnsd: upstream %s is this responder itself; give the host's real resolvers as upstreams", up)
		}
	}
	return s, nil
}

// bind opens the UDP socket and a TCP listener on the same port. With port
// 0, the port the kernel picked for UDP may be taken for TCP, so it retries.
func (s *Server) bind(addr netip.AddrPort) error {
	var lastErr error
	for range 20 {
		udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return fmt.Errorf("dnsd: listening on UDP %s: %w (is another DNS server using it, or is the address not on this host?)", addr, err)
		}
		bound := udp.LocalAddr().(*net.UDPAddr).AddrPort()
		tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err == nil {
			s.udp, s.tcp = udp, tcp
			return nil
		}
		udp.Close()
		lastErr = err
		if addr.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return fmt.Errorf("dnsd: listening on TCP %s: %w (is another DNS server using it?)", addr, lastErr)
}

// Addr is the address the server is bound to (UDP and TCP).
func (s *Server) Addr() netip.AddrPort {
	return s.udp.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close releases the sockets of a server that is not being served. Serve
// closes them itself when it returns. Close can be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := errors.Join(s.udp.Close(), s.tcp.Close())
	for c := range s.conns {
		c.Close()
	}
	return err
}

// Serve answers queries until ctx ends or a socket fails. It returns nil when
// ctx ended, after every goroutine it started has stopped and the sockets are
// closed. It can be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("dnsd: Serve called twice on the same server; Listen again for a new one")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var handlers sync.WaitGroup
	handlers.Go(func() {
		<-ctx.Done()
		s.Close() // unblocks the read and accept loops and open connections
	})
	errc := make(chan error, 2)
	go func() { errc <- s.serveUDP(ctx, &handlers) }()
	go func() { errc <- s.serveTCP(ctx, &handlers) }()
	err := <-errc
	cancel()
	s.Close()
	err = errors.Join(err, <-errc)
	handlers.Wait()
	return err
}

func (s *Server) allowed(a netip.Addr) bool {
	if len(s.cfg.Clients) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range s.cfg.Clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *Server) serveUDP(ctx context.Context, handlers *sync.WaitGroup) error {
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dnsd: reading UDP on %s: %w", s.Addr(), err)
		}
		if !s.allowed(from.Addr()) {
			continue
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		query := append([]byte(nil), buf[:n]...)
		handlers.Go(func() {
			defer func() { <-s.sem }()
			qctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
			defer cancel()
			if resp := s.handle(qctx, query, false); resp != nil {
				s.udp.WriteToUDPAddrPort(resp, from) // a lost reply is retried by the client
			}
		})
	}
}

func (s *Server) serveTCP(ctx context.Context, handlers *sync.WaitGroup) error {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Out of file descriptors and the like: back off, do not spin.
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		remote, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if !s.allowed(remote.Addr()) {
			c.Close()
			continue
		}
		select {
		case s.connSem <- struct{}{}:
		case <-ctx.Done():
			c.Close()
			return nil
		}
		if !s.track(c, true) {
			c.Close()
			<-s.connSem
			return nil
		}
		handlers.Go(func() {
			defer func() {
				s.track(c, false)
				c.Close()
				<-s.connSem
			}()
			s.serveConn(ctx, c)
		})
	}
}

// track adds or removes an open connection; adding fails once closed.
func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// serveConn answers length-prefixed queries on one TCP connection, one at a
// time, until the client stops, is idle too long, or sends garbage.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	for {
		c.SetDeadline(time.Now().Add(tcpIdle))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		query := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		qctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
		resp := s.handle(qctx, query, true)
		cancel()
		<-s.sem
		if resp == nil {
			return
		}
		c.SetDeadline(time.Now().Add(tcpIdle))
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
