package netmgr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"banger/internal/daemon/privops"
)

// The chains of banger's table. postrouting and forward hold only rules
// derived from the Config and are rebuilt when they differ; prerouting and
// output hold published ports.
const (
	chainPostrouting = "postrouting"
	chainForward     = "forward"
	chainInput       = "input"
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainDNS         = "dns"
)

type chainSpec struct {
	name   string
	typ    nftables.ChainType
	hook   *nftables.ChainHook
	prio   *nftables.ChainPriority
	static bool // rules come from staticRules
}

var chainSpecs = []chainSpec{
	{chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, true},
	{chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, true},
	{chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, true},
	{chainPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, false},
	{chainOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest, false},
	{chainDNS, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, true},
}

func (h *Host) nftConn() (*nftables.Conn, error) {
	var c *nftables.Conn
	var err error
	if h.ns >= 0 {
		c, err = nftables.New(nftables.WithNetNSFd(int(h.ns)))
	} else {
		c, err = nftables.New()
	}
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot open an nftables connection: %w", err)
	}
	return c, nil
}

func table(n privops.NetSpec) *nftables.Table {
	return &nftables.Table{Name: n.Table, Family: nftables.TableFamilyIPv4}
}

func chain(n privops.NetSpec, s chainSpec) *nftables.Chain {
	c := &nftables.Chain{Name: s.name, Table: table(n), Type: s.typ, Hooknum: s.hook, Priority: s.prio}
	if s.name == chainForward || s.name == chainInput {
		p := nftables.ChainPolicyAccept
		c.Policy = &p
	}
	return c
}

// comment reads the nft comment banger puts on each of its rules.
func comment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

func withComment(r *nftables.Rule, c string) *nftables.Rule {
	r.UserData = userdata.AppendString(nil, userdata.TypeComment, c)
	return r
}

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// staticRules are the rules of a static chain. Each comment names what the
// rule does and the values it was built from, so a rule built from another
// Config is noticed and replaced.
func staticRules(n privops.NetSpec, ch *nftables.Chain) []*nftables.Rule {
	switch ch.Name {
	case chainPostrouting:
		return postroutingRules(n, ch)
	case chainInput:
		return inputRules(n, ch)
	case chainDNS:
		return dnsRules(n, ch)
	case chainForward:
		return forwardRules(n, ch)
	}
	return nil
}

// maskBits is the bitwise AND of register 1 with mask, in host byte order
// (conntrack state and status bits).
func maskBits(mask uint32) *expr.Bitwise {
	return &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(mask),
		Xor:  make([]byte, 4)}
}

// postroutingRules masquerade the subnet's traffic leaving by any other
// interface, and loopback clients of published ports.
func postroutingRules(n privops.NetSpec, ch *nftables.Chain) []*nftables.Rule {
	t, br, sub := ch.Table, n.Bridge, n.Subnet
	mask := netipMask(sub.Bits())
	net4 := sub.Addr().As4()
	return []*nftables.Rule{
		// ip saddr SUBNET oifname != BRIDGE masquerade
		withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net4[:]},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(br)},
			&expr.Masq{},
		}}, fmt.Sprintf("banger: masquerade %s out of all but %s", sub, br)),
		// oifname BRIDGE ip saddr 127.0.0.0/8 masquerade: local
		// clients of published ports that dialled a loopback address.
		withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
			&expr.Masq{},
		}}, fmt.Sprintf("banger: masquerade loopback clients into %s", br)),
	}
}

// inputRules keep guests from opening connections to the host's loopback
// services.
func inputRules(n privops.NetSpec, ch *nftables.Chain) []*nftables.Rule {
	t, br := ch.Table, n.Bridge
	return []*nftables.Rule{
		// iifname BRIDGE ip daddr 127.0.0.0/8 ct state != established,
		// related drop: route_localnet on the bridge (for published
		// ports) must not let guests open connections to the host's
		// loopback services; replies to loopback clients pass.
		withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			maskBits(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}}, fmt.Sprintf("banger: drop new loopback connections from %s", br)),
	}
}

// dnsRules send the guests' DNS queries to the gateway on to the daemon's
// DNS port, over UDP and TCP; none when there is no DNS port.
func dnsRules(n privops.NetSpec, ch *nftables.Chain) []*nftables.Rule {
	if n.DNSPort == 0 {
		return nil
	}
	t, br := ch.Table, n.Bridge
	gw := n.Gateway().As4()
	var rules []*nftables.Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		name := map[byte]string{unix.IPPROTO_UDP: "udp", unix.IPPROTO_TCP: "tcp"}[proto]
		// iifname BRIDGE ip daddr GATEWAY PROTO dport 53 dnat to GATEWAY:DNSPORT
		rules = append(rules, withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: gw[:]},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
			&expr.Immediate{Register: 1, Data: gw[:]},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(n.DNSPort)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}}, fmt.Sprintf("banger: dns %s/53 on %s to port %d", name, br, n.DNSPort)))
	}
	return rules
}

// forwardRules accept what comes from the bridge, replies into it, and
// connections to published ports.
func forwardRules(n privops.NetSpec, ch *nftables.Chain) []*nftables.Rule {
	t, br := ch.Table, n.Bridge
	return []*nftables.Rule{
		// iifname BRIDGE accept
		withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}}, fmt.Sprintf("banger: accept from %s", br)),
		// oifname BRIDGE ct state established,related accept
		withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			maskBits(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}}, fmt.Sprintf("banger: accept replies into %s", br)),
		// oifname BRIDGE ct status dnat accept
		withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
			&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
			maskBits(ipsDstNAT),
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}}, fmt.Sprintf("banger: accept published ports into %s", br)),
	}
}

// ipsDstNAT is IPS_DST_NAT of the conntrack status bits.
const ipsDstNAT = 1 << 5

func netipMask(bits int) []byte {
	v := ^uint32(0) << (32 - bits)
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func comments(rs []*nftables.Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = comment(r)
	}
	return out
}

// ensureNft creates what is missing of banger's table and rebuilds a static
// chain whose rules differ from the Config's, in one transaction. When all
// is in place it sends nothing.
func (h *Host) ensureNft(n privops.NetSpec) error {
	c, err := h.nftConn()
	if err != nil {
		return err
	}
	t := table(n)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list nftables tables (needs root): %w", err)
	}
	haveTable := slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name })
	existing := map[string]*nftables.Chain{}
	if haveTable {
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return fmt.Errorf("netmgr: cannot list the chains of nftables table %s: %w", t.Name, err)
		}
		for _, ch := range chains {
			if ch.Table.Name == t.Name {
				existing[ch.Name] = ch
			}
		}
	} else {
		c.AddTable(t)
	}
	changed := !haveTable
	for _, s := range chainSpecs {
		want := chain(n, s)
		got, ok := existing[s.name]
		if ok && !sameHook(got, want) {
			return fmt.Errorf("netmgr: chain %s of nftables table ip %s is not the %s chain banger expects; delete the table (nft delete table ip %s) with no VM running and retry", s.name, t.Name, s.typ, t.Name)
		}
		if !ok {
			c.AddChain(want)
			changed = true
		}
		if !s.static {
			continue
		}
		rules := staticRules(n, want)
		if ok {
			cur, err := c.GetRules(t, want)
			if err != nil {
				return fmt.Errorf("netmgr: cannot list rules of chain %s in table %s: %w", s.name, t.Name, err)
			}
			if slices.Equal(comments(cur), comments(rules)) {
				continue
			}
			c.FlushChain(want)
		}
		for _, r := range rules {
			c.AddRule(r)
		}
		changed = true
	}
	if !changed {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netmgr: cannot set up nftables table ip %s (needs root and nf_tables): %w", t.Name, err)
	}
	return nil
}

func sameHook(a, b *nftables.Chain) bool {
	eq := func(x, y *nftables.ChainHook) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqp := func(x, y *nftables.ChainPriority) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.Type == b.Type && eq(a.Hooknum, b.Hooknum) && eqp(a.Priority, b.Priority)
}

func (h *Host) deleteTable(n privops.NetSpec) error {
	c, err := h.nftConn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == n.Table }) {
		return nil
	}
	c.DelTable(table(n))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netmgr: cannot delete nftables table ip %s: %w", n.Table, err)
	}
	return nil
}

// publishComment is the comment of a published port's rules: the host
// port, the VM, where it goes, and the uid of the user whose VM it is.
func publishComment(hostPort uint16, vmID string, to netip.AddrPort, uid int) string {
	return fmt.Sprintf("banger: publish tcp/%d vm=%s to=%s uid=%d", hostPort, vmID, to, uid)
}

// parsePublish splits a publish comment; ok is false for other comments.
// A comment without a uid (from an older banger) has uid -1.
func parsePublish(c string) (hostPort uint16, vmID string, uid int, ok bool) {
	if !strings.HasPrefix(c, "banger: publish tcp/") {
		return 0, "", 0, false
	}
	f := strings.Fields(strings.TrimPrefix(c, "banger: publish tcp/"))
	if len(f) < 2 || !strings.HasPrefix(f[1], "vm=") {
		return 0, "", 0, false
	}
	p, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return 0, "", 0, false
	}
	uid = -1
	for _, kv := range f[2:] {
		if v, ok := strings.CutPrefix(kv, "uid="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				uid = n
			}
		}
	}
	return uint16(p), strings.TrimPrefix(f[1], "vm="), uid, true
}

// ownsRule says whether a published-port rule of uid is the Host user's
// to replace or remove. A rule without a uid (uid -1, an older banger's)
// is root's.
func (h *Host) ownsRule(uid int) bool {
	return uid == h.uid || (uid == -1 && h.uid == 0)
}

func dnatRule(ch *nftables.Chain, hostPort uint16, to netip.AddrPort, comm string) *nftables.Rule {
	ip := to.Addr().As4()
	return withComment(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: []expr.Any{
		// fib daddr type local
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		// meta l4proto tcp th dport HOSTPORT
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(hostPort)},
		// dnat to IP:PORT
		&expr.Immediate{Register: 1, Data: ip[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}}, comm)
}

// Publish forwards TCP p.HostPort on every local address of the host to
// p.Guest: DNAT in prerouting for clients elsewhere and in output for
// clients on the host (loopback included). It brings the network up first.
// Publishing the same thing again changes nothing; a host port published
// for another VM, or by another uid (for a user, by an older banger whose
// rules carry no uid), is refused.
func (h *Host) Publish(ctx context.Context, n privops.NetSpec, p privops.Publish) error {
	if err := checkVMID(p.VMID); err != nil {
		return err
	}
	if p.HostPort == 0 || p.Guest.Port() == 0 {
		return fmt.Errorf("netmgr: cannot publish port %d to %d for VM %s: ports are 1 to 65535", p.HostPort, p.Guest.Port(), p.VMID)
	}
	if !n.Subnet.Contains(p.Guest.Addr()) {
		return fmt.Errorf("netmgr: cannot publish port %d for VM %s: guest address %s is outside %s", p.HostPort, p.VMID, p.Guest.Addr(), n.Subnet)
	}
	unlock, err := h.begin(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	if err := h.ensureLocked(ctx, n); err != nil {
		return err
	}
	c, err := h.nftConn()
	if err != nil {
		return err
	}
	if err := publishedElsewhere(c, n.Table, p.HostPort); err != nil {
		return err
	}
	if err := runIn(h.ns, func() error { return checkNotListening(p.HostPort) }); err != nil {
		return err
	}
	want := publishComment(p.HostPort, p.VMID, p.Guest, h.uid)
	changed := false
	for _, name := range []string{chainPrerouting, chainOutput} {
		ch := &nftables.Chain{Name: name, Table: table(n)}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return fmt.Errorf("netmgr: cannot list rules of chain %s: %w", name, err)
		}
		found := false
		for _, r := range rules {
			port, owner, uid, ok := parsePublish(comment(r))
			if !ok || port != p.HostPort {
				continue
			}
			if owner == p.VMID && uid == -1 && !h.ownsRule(uid) {
				return fmt.Errorf("netmgr: host port %d is published for VM %s by a rule of an older banger, which only root may replace; choose another port, or have root remove the rule", p.HostPort, owner)
			}
			if owner != p.VMID || !h.ownsRule(uid) {
				return fmt.Errorf("netmgr: host port %d is already published for VM %s; unpublish it there or choose another port", p.HostPort, owner)
			}
			if comment(r) == want && !found {
				found = true
				continue
			}
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("netmgr: cannot replace the rule for host port %d: %w", p.HostPort, err)
			}
			changed = true
		}
		if !found {
			c.AddRule(dnatRule(ch, p.HostPort, p.Guest, want))
			changed = true
		}
	}
	if changed {
		if err := c.Flush(); err != nil {
			return fmt.Errorf("netmgr: cannot publish host port %d for VM %s: %w", p.HostPort, p.VMID, err)
		}
	}
	// Lets output-chain DNAT of 127.0.0.0/8 destinations leave by the bridge.
	return runIn(h.ns, func() error {
		_, err := setSysctl("net/ipv4/conf/"+n.Bridge+"/route_localnet", "1")
		return err
	})
}

// publishedElsewhere refuses a host port that another banger network on
// this host (another table named by TableFor) already publishes: two DNAT
// rules for one port would race.
func publishedElsewhere(c *nftables.Conn, mine string, hostPort uint16) error {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == mine || (t.Name != DefaultTable && !strings.HasPrefix(t.Name, DefaultTable+"-")) {
			continue
		}
		rules, err := c.GetRules(t, &nftables.Chain{Name: chainPrerouting, Table: t})
		if err != nil {
			continue // no such chain: nothing published there
		}
		for _, r := range rules {
			if port, vm, _, ok := parsePublish(comment(r)); ok && port == hostPort {
				return fmt.Errorf("netmgr: host port %d is already published for VM %s on another banger network (nftables table %s); choose another port", hostPort, vm, t.Name)
			}
		}
	}
	return nil
}

// checkNotListening refuses a host port on which a socket of this network
// namespace listens: the DNAT rule would take its connections over, from
// the host and from outside.
func checkNotListening(port uint16) error {
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // no IPv6
			}
			return fmt.Errorf("netmgr: cannot read %s to check port %d: %w", f, port, err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 4 || fs[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && uint16(p) == port {
				return fmt.Errorf("netmgr: host port %d is in use by a service on this host; publish another port", port)
			}
		}
	}
	return nil
}

// Unpublish removes vmID's published hostPort (all of its ports when
// hostPort is 0) among the caller's; removing what is not there is not an
// error.
func (h *Host) Unpublish(ctx context.Context, n privops.NetSpec, vmID string, hostPort uint16) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	unlock, err := h.begin(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := h.nftConn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == n.Table }) {
		return nil
	}
	changed := false
	for _, name := range []string{chainPrerouting, chainOutput} {
		ch := &nftables.Chain{Name: name, Table: table(n)}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return fmt.Errorf("netmgr: cannot list rules of chain %s: %w", name, err)
		}
		for _, r := range rules {
			port, owner, uid, ok := parsePublish(comment(r))
			if !ok || owner != vmID || !h.ownsRule(uid) || (hostPort != 0 && port != hostPort) {
				continue
			}
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("netmgr: cannot remove published port %d of VM %s: %w", port, vmID, err)
			}
			changed = true
		}
	}
	if changed {
		if err := c.Flush(); err != nil {
			return fmt.Errorf("netmgr: cannot remove published ports of VM %s: %w", vmID, err)
		}
	}
	return nil
}

// Published lists the published ports of network n: host port to VM id.
func (h *Host) Published(ctx context.Context, n privops.NetSpec) (map[uint16]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := h.nftConn()
	if err != nil {
		return nil, err
	}
	out := map[uint16]string{}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == n.Table }) {
		return out, nil
	}
	ch := &nftables.Chain{Name: chainPrerouting, Table: table(n)}
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot list rules of chain %s: %w", chainPrerouting, err)
	}
	for _, r := range rules {
		if p, owner, _, ok := parsePublish(comment(r)); ok {
			out[p] = owner
		}
	}
	return out, nil
}
