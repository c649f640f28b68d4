package netmgr

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
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
}

func (m *Manager) nftConn() (*nftables.Conn, error) {
	var c *nftables.Conn
	var err error
	if m.ns >= 0 {
		c, err = nftables.New(nftables.WithNetNSFd(int(m.ns)))
	} else {
		c, err = nftables.New()
	}
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot open an nftables connection: %w", err)
	}
	return c, nil
}

func (m *Manager) table() *nftables.Table {
	return &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyIPv4}
}

func (m *Manager) chain(s chainSpec) *nftables.Chain {
	c := &nftables.Chain{Name: s.name, Table: m.table(), Type: s.typ, Hooknum: s.hook, Priority: s.prio}
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
func (m *Manager) staticRules(ch *nftables.Chain) []*nftables.Rule {
	t := ch.Table
	br := m.cfg.Bridge
	sub := m.cfg.Subnet
	mask := netipMask(sub.Bits())
	net4 := sub.Addr().As4()
	switch ch.Name {
	case chainPostrouting:
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
	case chainInput:
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
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
					Xor:  make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}}, fmt.Sprintf("banger: drop new loopback connections from %s", br)),
		}
	case chainForward:
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
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
					Xor:  make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}}, fmt.Sprintf("banger: accept replies into %s", br)),
			// oifname BRIDGE ct status dnat accept
			withComment(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
				&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT),
					Xor:  make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}}, fmt.Sprintf("banger: accept published ports into %s", br)),
		}
	}
	return nil
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
func (m *Manager) ensureNft() error {
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	t := m.table()
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
		want := m.chain(s)
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
		rules := m.staticRules(want)
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

func (m *Manager) deleteTable() error {
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == m.cfg.Table }) {
		return nil
	}
	c.DelTable(m.table())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netmgr: cannot delete nftables table ip %s: %w", m.cfg.Table, err)
	}
	return nil
}

// publishComment is the comment of a published port's rules; its prefix up
// to the VM id identifies the host port.
func publishComment(hostPort uint16, vmID string, to netip.AddrPort) string {
	return fmt.Sprintf("%svm=%s to=%s", publishPrefix(hostPort), vmID, to)
}

func publishPrefix(hostPort uint16) string { return fmt.Sprintf("banger: publish tcp/%d ", hostPort) }

// parsePublish splits a publish comment; ok is false for other comments.
func parsePublish(c string) (hostPort uint16, vmID string, ok bool) {
	var port uint16
	var rest string
	if !strings.HasPrefix(c, "banger: publish tcp/") {
		return 0, "", false
	}
	if _, err := fmt.Sscanf(c, "banger: publish tcp/%d vm=%s", &port, &rest); err != nil {
		return 0, "", false
	}
	return port, rest, true
}

func (m *Manager) dnatRule(ch *nftables.Chain, hostPort uint16, to netip.AddrPort, comm string) *nftables.Rule {
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

// Publish forwards TCP hostPort on every local address of the host to
// guestIP:guestPort: DNAT in prerouting for clients elsewhere and in output
// for clients on the host (loopback included). Publishing the same thing
// again changes nothing; a host port published for another VM is refused.
func (m *Manager) Publish(ctx context.Context, vmID string, hostPort uint16, guestIP netip.Addr, guestPort uint16) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	if hostPort == 0 || guestPort == 0 {
		return fmt.Errorf("netmgr: cannot publish port %d to %d for VM %s: ports are 1 to 65535", hostPort, guestPort, vmID)
	}
	if !m.cfg.Subnet.Contains(guestIP) {
		return fmt.Errorf("netmgr: cannot publish port %d for VM %s: guest address %s is outside %s", hostPort, vmID, guestIP, m.cfg.Subnet)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ensureLocked(); err != nil {
		return err
	}
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	to := netip.AddrPortFrom(guestIP, guestPort)
	want := publishComment(hostPort, vmID, to)
	changed := false
	for _, name := range []string{chainPrerouting, chainOutput} {
		ch := &nftables.Chain{Name: name, Table: m.table()}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return fmt.Errorf("netmgr: cannot list rules of chain %s: %w", name, err)
		}
		found := false
		for _, r := range rules {
			p, owner, ok := parsePublish(comment(r))
			if !ok || p != hostPort {
				continue
			}
			if owner != vmID {
				return fmt.Errorf("netmgr: host port %d is already published for VM %s; unpublish it there or choose another port", hostPort, owner)
			}
			if comment(r) == want && !found {
				found = true
				continue
			}
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("netmgr: cannot replace the rule for host port %d: %w", hostPort, err)
			}
			changed = true
		}
		if !found {
			c.AddRule(m.dnatRule(ch, hostPort, to, want))
			changed = true
		}
	}
	if changed {
		if err := c.Flush(); err != nil {
			return fmt.Errorf("netmgr: cannot publish host port %d for VM %s: %w", hostPort, vmID, err)
		}
	}
	// Lets output-chain DNAT of 127.0.0.0/8 destinations leave by the bridge.
	return runIn(m.ns, func() error {
		_, err := setSysctl("net/ipv4/conf/"+m.cfg.Bridge+"/route_localnet", "1")
		return err
	})
}

// Unpublish removes what Publish added for vmID and hostPort; removing what
// is not there is not an error.
func (m *Manager) Unpublish(ctx context.Context, vmID string, hostPort uint16) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	if hostPort == 0 {
		return fmt.Errorf("netmgr: cannot unpublish port 0 for VM %s", vmID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unpublishLocked(vmID, hostPort)
}

// unpublishLocked removes vmID's published ports (all of them when
// hostPort is 0).
func (m *Manager) unpublishLocked(vmID string, hostPort uint16) error {
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == m.cfg.Table }) {
		return nil
	}
	changed := false
	for _, name := range []string{chainPrerouting, chainOutput} {
		ch := &nftables.Chain{Name: name, Table: m.table()}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return fmt.Errorf("netmgr: cannot list rules of chain %s: %w", name, err)
		}
		for _, r := range rules {
			p, owner, ok := parsePublish(comment(r))
			if !ok || owner != vmID || (hostPort != 0 && p != hostPort) {
				continue
			}
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("netmgr: cannot remove published port %d of VM %s: %w", p, vmID, err)
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

// Published lists the published ports: host port to VM id.
func (m *Manager) Published(ctx context.Context) (map[uint16]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.nftConn()
	if err != nil {
		return nil, err
	}
	out := map[uint16]string{}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == m.cfg.Table }) {
		return out, nil
	}
	ch := &nftables.Chain{Name: chainPrerouting, Table: m.table()}
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot list rules of chain %s: %w", chainPrerouting, err)
	}
	for _, r := range rules {
		if p, owner, ok := parsePublish(comment(r)); ok {
			out[p] = owner
		}
	}
	return out, nil
}
