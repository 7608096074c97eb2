//go:build linux

// Package netsim gives running machines their network: one host bridge
// (orbsim0) carrying the gateway of every address plan in use, a veth pair
// per machine, addresses leased from a host-global registry (so machines of
// different ORBSIM_HOMEs and versions never collide on the shared bridge), and
// a managed block in each machine's /etc/hosts so machines resolve each other
// as NAME.orb.local.
package netsim

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"golang.org/x/sys/unix"
)

const (
	Bridge = "orbsim0"
	// Subnet6 is OrbStack's machine IPv6 prefix (reference §8); fixed in
	// every version (2.x's netconf says "ipv6 is fixed for now").
	Subnet6   = "fd07:b51a:cc66:0"
	HostAlias = "host.orb.internal"
	registry  = "/run/orbsim"
	// DefaultSubnet4 is 2.x's network.subnet4 default.
	DefaultSubnet4 = "192.168.138.0/23"
)

// Plan is where one OrbStack version (and network.subnet4) puts machines.
type Plan struct {
	Machines netip.Prefix // the machines' /24: eth0 gets ADDR/24
	Gateway  netip.Addr   // the default route; host.orb.internal
	First    netip.Addr   // lease range, inclusive
	Last     netip.Addr
	// Relay is 2.x's per-machine NAME.orb.local address range (the first
	// /24 of network.subnet4); invalid in 1.x, where NAME.orb.local is the
	// machine's own address.
	Relay                 netip.Prefix
	RelayFirst, RelayLast netip.Addr
}

// Plan1 is OrbStack 1.x: machines in 198.19.249.0/24 (GH#367, #748, #1406,
// #1575). The lease range .2–.254 is ours; 1.x's own is not recorded.
func Plan1() Plan {
	return Plan{Machines: netip.MustParsePrefix("198.19.249.0/24"), Gateway: netip.MustParseAddr("198.19.249.1"),
		First: netip.MustParseAddr("198.19.249.2"), Last: netip.MustParseAddr("198.19.249.254")}
}

// Plan2 is OrbStack 2.x for a network.subnet4 value, split as OrbStack's
// vmgr/vnet/netconf/dynamic.go does: the first /24 is the domain relay
// (NAME.orb.local), the second the machines, gateway .1, DHCP .10–.247.
// Its errors are netconf's own texts.
func Plan2(subnet4 string) (Plan, error) {
	p, err := netip.ParsePrefix(subnet4)
	if err != nil || !p.Addr().Is4() {
		// netip's zero Prefix prints "invalid Prefix", which is what GH#2095
		// shows for an unparsable value.
		return Plan{}, fmt.Errorf("subnet '%s' is not an IPv4 prefix", p)
	}
	if p.Bits() != 23 {
		return Plan{}, fmt.Errorf("subnet '%s' is not a /23 prefix", p)
	}
	base := p.Masked().Addr().As4()
	relay := netip.PrefixFrom(netip.AddrFrom4(base), 24)
	base[2]++
	machines := netip.PrefixFrom(netip.AddrFrom4(base), 24)
	at := func(pfx netip.Prefix, n byte) netip.Addr {
		b := pfx.Addr().As4()
		b[3] = n
		return netip.AddrFrom4(b)
	}
	// The relay range is our guess: GH#2676 shows .4; .1 is left free.
	return Plan{Machines: machines, Gateway: at(machines, 1), First: at(machines, 10), Last: at(machines, 247),
		Relay: relay, RelayFirst: at(relay, 2), RelayLast: at(relay, 254)}, nil
}

// HasRelay reports whether NAME.orb.local is a relay address (2.x).
func (p Plan) HasRelay() bool { return p.Relay.IsValid() }

// IP6 is the IPv6 address that goes with a machine's IPv4 address, in the
// canonical (RFC 5952) form that `ip -6 addr` inside the machine shows. The
// whole IPv4 address is embedded, so machines of different plans never share
// one.
func IP6(ip4 string) string {
	a, err := netip.ParseAddr(ip4)
	if err != nil || !a.Is4() {
		return ""
	}
	b := a.As4()
	return net.ParseIP(fmt.Sprintf("%s::%x:%x", Subnet6, uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3]))).String()
}

func ipv6Enabled() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

type lease struct {
	Owner state.Process `json:"owner"`
	Home  string        `json:"home"`
	ID    string        `json:"id"`
}

func withRegistryLock(fn func() error) error {
	if err := os.MkdirAll(filepath.Join(registry, "leases"), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", registry, err)
	}
	f, err := os.OpenFile(filepath.Join(registry, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

// Lease is what a running machine holds: its address and, in 2.x, its relay.
type Lease struct {
	IP4   string `json:"ip4,omitempty"`
	Relay string `json:"relay,omitempty"`
}

// Take reserves addresses of plan for a running machine's init process,
// keeping the machine's previous ones when they are in plan and free.
func Take(plan Plan, previous Lease, owner state.Process, home, id string) (Lease, error) {
	var got Lease
	err := withRegistryLock(func() error {
		free := func(a netip.Addr) bool {
			// A machine's host-side veth lives exactly as long as its
			// network namespace, so it marks the address taken even when
			// the registry lost the lease (someone wiped /run/orbsim).
			if _, err := net.InterfaceByName(hostLink(a)); err == nil {
				return false
			}
			return leaseFree(a.String(), owner)
		}
		pick := func(prev string, first, last netip.Addr) (netip.Addr, bool) {
			if a, err := netip.ParseAddr(prev); err == nil && inRange(a, first, last) && free(a) {
				return a, true
			}
			for a := first; inRange(a, first, last); a = a.Next() {
				if free(a) {
					return a, true
				}
			}
			return netip.Addr{}, false
		}
		ip, ok := pick(previous.IP4, plan.First, plan.Last)
		if !ok {
			return fmt.Errorf("no free address in %s–%s (every one is leased to a running machine)", plan.First, plan.Last)
		}
		var relay netip.Addr
		if plan.HasRelay() {
			if relay, ok = pick(previous.Relay, plan.RelayFirst, plan.RelayLast); !ok {
				return fmt.Errorf("no free relay address in %s", plan.Relay)
			}
		}
		b, _ := json.Marshal(lease{Owner: owner, Home: home, ID: id})
		for _, a := range []netip.Addr{ip, relay} {
			if a.IsValid() {
				if err := os.WriteFile(filepath.Join(registry, "leases", a.String()), b, 0o644); err != nil {
					return err
				}
			}
		}
		got.IP4 = ip.String()
		if relay.IsValid() {
			got.Relay = relay.String()
		}
		return nil
	})
	return got, err
}

func inRange(a, first, last netip.Addr) bool {
	return a.IsValid() && first.Compare(a) <= 0 && a.Compare(last) <= 0
}

// leaseFree reads the registry entry of one address.
func leaseFree(name string, owner state.Process) bool {
	b, err := os.ReadFile(filepath.Join(registry, "leases", name))
	if err != nil {
		return true
	}
	var l lease
	if json.Unmarshal(b, &l) != nil {
		return true
	}
	return !l.Owner.Alive() || l.Owner == owner
}

// Release frees l's addresses if owner still holds them.
func Release(l Lease, owner state.Process) {
	_ = withRegistryLock(func() error {
		for _, a := range []string{l.IP4, l.Relay} {
			if a == "" {
				continue
			}
			p := filepath.Join(registry, "leases", a)
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			var got lease
			if json.Unmarshal(b, &got) == nil && got.Owner == owner {
				os.Remove(p)
			}
		}
		return nil
	})
}

func ipCmd(stdin string, args ...string) error {
	cmd := exec.Command("ip", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func ensureBridge(plan Plan) error {
	return withRegistryLock(func() error {
		// Ask netlink, not /sys/class/net: sysfs shows the network namespace
		// it was mounted in, which is not ours under `unshare -n` or in a
		// container, and a stale answer there leaves machines unwired.
		if _, err := net.InterfaceByName(Bridge); err != nil {
			if err := ipCmd("", "link", "add", Bridge, "type", "bridge"); err != nil && !strings.Contains(err.Error(), "File exists") {
				return err
			}
			// A bridge deleted under running machines (a cleanup script, a
			// network reset) took their veth ends off it: put them back.
			ifaces, _ := net.Interfaces()
			for _, i := range ifaces {
				if strings.HasPrefix(i.Name, "orbsimv") {
					ipCmd("", "link", "set", i.Name, "master", Bridge)
				}
			}
		}
		// Idempotent: "replace" does not fail when the address is already
		// there. Every plan in use (1.x and 2.x simulators, other subnet4
		// values) adds its own gateway.
		if err := ipCmd("", "addr", "replace", fmt.Sprintf("%s/%d", plan.Gateway, plan.Machines.Bits()), "dev", Bridge); err != nil {
			return err
		}
		if ipv6Enabled() {
			if err := ipCmd("", "addr", "replace", Subnet6+"::1/64", "dev", Bridge, "nodad"); err != nil {
				return err
			}
		}
		if err := ipCmd("", "link", "set", Bridge, "up"); err != nil {
			return err
		}
		if plan.HasRelay() {
			// The relay addresses are on-link on the bridge, as on a Mac
			// (GH#2676: netstat shows them on bridge100, "link#").
			return ipCmd("", "route", "replace", plan.Relay.String(), "dev", Bridge)
		}
		return nil
	})
}

// hostLink is the host end of the veth pair of the machine at address a:
// "orbsimv" and the address in hex, 15 characters, the longest name Linux
// allows.
func hostLink(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("orbsimv%08x", binary.BigEndian.Uint32(b[:]))
}

// Attach plugs the network namespace of pid into the bridge as eth0 with
// l's addresses. A relay address sits on the machine's lo: the machine
// answers ARP for it on eth0 (Linux's default arp_ignore=0), so it is
// reachable at NAME.orb.local without showing up on eth0.
func Attach(pid int, plan Plan, l Lease) error {
	if err := ensureBridge(plan); err != nil {
		return err
	}
	a, err := netip.ParseAddr(l.IP4)
	if err != nil {
		return fmt.Errorf("bad lease %q: %v", l.IP4, err)
	}
	b := a.As4()
	host, peer := hostLink(a), fmt.Sprintf("orbsimp%08x", binary.BigEndian.Uint32(b[:]))
	// A leftover pair from a machine that died without cleanup holds the name.
	_ = ipCmd("", "link", "del", host)
	if err := ipCmd("", "link", "add", host, "type", "veth", "peer", "name", peer); err != nil {
		return err
	}
	batch := fmt.Sprintf("link set %s master %s\nlink set %s up\nlink set %s netns %d\n", host, Bridge, host, peer, pid)
	if err := ipCmd(batch, "-batch", "-"); err != nil {
		ipCmd("", "link", "del", host)
		return err
	}
	inside := fmt.Sprintf("link set lo up\nlink set %s name eth0\naddr add %s/%d dev eth0\n", peer, l.IP4, plan.Machines.Bits())
	if ipv6Enabled() {
		inside += fmt.Sprintf("addr add %s/64 dev eth0 nodad\n", IP6(l.IP4))
	}
	inside += fmt.Sprintf("link set eth0 up\nroute add default via %s\n", plan.Gateway)
	if plan.HasRelay() && l.Relay != "" {
		inside += fmt.Sprintf("addr add %s/32 dev lo\nroute add %s dev eth0\n", l.Relay, plan.Relay)
	}
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(inside)
	if out, err := cmd.CombinedOutput(); err != nil {
		ipCmd("", "link", "del", host)
		return fmt.Errorf("configure eth0 in machine: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

const (
	blockStart = "# BEGIN orbsim machines (managed by orbctl; edits inside are lost)"
	blockEnd   = "# END orbsim machines"
)

// Peer is a running machine as /etc/hosts lists it.
type Peer struct {
	Name string
	IP   string // what NAME.orb.local resolves to: the relay in 2.x
	IP6  string // "" when the host has no IPv6
}

// WriteHosts rewrites the managed block of the /etc/hosts that the machine
// whose init is pid sees, keeping everything outside the block.
func WriteHosts(pid int, self, gateway string, peers []Peer) error {
	path := fmt.Sprintf("/proc/%d/root/etc/hosts", pid)
	old, _ := os.ReadFile(path)
	tmp := path + ".orbsim-tmp"
	if err := os.WriteFile(tmp, []byte(HostsContent(string(old), self, gateway, peers)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// HostsContent is old with its managed block replaced by one for self and
// peers (appended at the end); gateway is host.orb.internal.
func HostsContent(old, self, gateway string, peers []Peer) string {
	var kept []string
	in := false
	for _, line := range strings.Split(strings.TrimRight(old, "\n"), "\n") {
		switch {
		case line == blockStart:
			in = true
		case line == blockEnd:
			in = false
		case !in && line != "":
			kept = append(kept, line)
		}
	}
	if len(kept) == 0 {
		kept = []string{"127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"}
	}
	var b strings.Builder
	for _, l := range kept {
		b.WriteString(l + "\n")
	}
	b.WriteString(blockStart + "\n")
	fmt.Fprintf(&b, "127.0.1.1\t%s\n", self)
	fmt.Fprintf(&b, "%s\t%s\n", gateway, HostAlias)
	for _, p := range peers {
		fmt.Fprintf(&b, "%s\t%s.orb.local\n", p.IP, p.Name)
	}
	// IPv6 lines after all IPv4 ones, so resolvers that take the first
	// match (and IPv4-only tools) keep getting the IPv4 address.
	for _, p := range peers {
		if p.IP6 != "" {
			fmt.Fprintf(&b, "%s\t%s.orb.local\n", p.IP6, p.Name)
		}
	}
	b.WriteString(blockEnd + "\n")
	return b.String()
}

// IfUnused runs fn under the registry lock if no running machine holds an
// address in prefix, and reports whether it did. Holding the lock orders fn
// against Take: a machine that starts after fn sees fn's effects (the
// package proxy's exit releases its lock inside fn, so the starter of that
// machine starts a new proxy).
func IfUnused(prefix netip.Prefix, fn func()) bool {
	ran := false
	_ = withRegistryLock(func() error {
		entries, _ := os.ReadDir(filepath.Join(registry, "leases"))
		for _, e := range entries {
			a, err := netip.ParseAddr(e.Name())
			if err != nil || !prefix.Contains(a) {
				continue
			}
			if !leaseFree(e.Name(), state.Process{}) {
				return nil
			}
		}
		fn()
		ran = true
		return nil
	})
	return ran
}

// Registry is the host-global directory of leases and locks (/run/orbsim).
func Registry() string { return registry }
