// Package netmgr sets up and tears down the host side of VM networking: the
// bridge with its gateway address, one tap per VM, IPv4 leases, and banger's
// own nftables table (masquerade out of the host, forward accept, DNAT for
// published ports), plus the managed /etc/hosts block that makes NAME.banger
// resolve on the host. It turns ip_forward on, remembering the old value in
// a file under /run, and puts it back when the last banger bridge goes. It
// needs root; it never shells out to ip or nft.
package netmgr
