//go:build linux

// Package netsim gives running machines their network: one host bridge
// (orbsim0, 198.19.249.1/24), a veth pair per machine, addresses leased from a
// host-global registry (so machines of different ORBSIM_HOMEs never collide on
// the shared bridge), and a managed block in each machine's /etc/hosts so
// machines resolve each other as NAME.orb.local.
package netsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"golang.org/x/sys/unix"
)

const (
	Bridge  = "orbsim0"
	Subnet  = "198.19.249"
	Gateway = Subnet + ".1"
	// Subnet6 is OrbStack's machine IPv6 prefix (reference §8).
	Subnet6   = "fd07:b51a:cc66:0"
	HostAlias = "host.orb.internal"
	registry  = "/run/orbsim"
)

// IP is the address of lease index n.
func IP(n int) string { return fmt.Sprintf("%s.%d", Subnet, n) }

// IP6 is the IPv6 address of lease index n, in the canonical (RFC 5952)
// form that `ip -6 addr` inside the machine shows: fd07:b51a:cc66::2.
func IP6(n int) string { return net.ParseIP(fmt.Sprintf("%s::%x", Subnet6, n)).String() }

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

// Lease reserves an address for a running machine's init process, keeping
// preferred (the machine's previous index) when it is free.
func Lease(preferred int, owner state.Process, home, id string) (int, error) {
	got := 0
	err := withRegistryLock(func() error {
		free := func(n int) bool {
			// A machine's host-side veth lives exactly as long as its
			// network namespace, so it marks the address taken even when
			// the registry lost the lease (someone wiped /run/orbsim).
			if _, err := net.InterfaceByName(hostLink(n)); err == nil {
				return false
			}
			b, err := os.ReadFile(filepath.Join(registry, "leases", strconv.Itoa(n)))
			if err != nil {
				return true
			}
			var l lease
			if json.Unmarshal(b, &l) != nil {
				return true
			}
			return !l.Owner.Alive() || l.Owner == owner
		}
		candidates := []int{}
		if preferred >= 2 && preferred <= 254 {
			candidates = append(candidates, preferred)
		}
		for n := 2; n <= 254; n++ {
			candidates = append(candidates, n)
		}
		for _, n := range candidates {
			if free(n) {
				b, _ := json.Marshal(lease{Owner: owner, Home: home, ID: id})
				got = n
				return os.WriteFile(filepath.Join(registry, "leases", strconv.Itoa(n)), b, 0o644)
			}
		}
		return errors.New("no free address in " + Subnet + ".0/24 (254 machines running)")
	})
	return got, err
}

// Release frees lease n if owner still holds it.
func Release(n int, owner state.Process) {
	_ = withRegistryLock(func() error {
		p := filepath.Join(registry, "leases", strconv.Itoa(n))
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		var l lease
		if json.Unmarshal(b, &l) == nil && l.Owner == owner {
			os.Remove(p)
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

func ensureBridge() error {
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
		// Idempotent: "replace" does not fail when the address is already there.
		if err := ipCmd("", "addr", "replace", Gateway+"/24", "dev", Bridge); err != nil {
			return err
		}
		if ipv6Enabled() {
			if err := ipCmd("", "addr", "replace", IP6(1)+"/64", "dev", Bridge, "nodad"); err != nil {
				return err
			}
		}
		return ipCmd("", "link", "set", Bridge, "up")
	})
}

// hostLink is the host end of lease n's veth pair.
func hostLink(n int) string { return fmt.Sprintf("orbsimv%d", n) }

// Attach plugs the network namespace of pid into the bridge as eth0 with
// address index n.
func Attach(pid, n int) error {
	if err := ensureBridge(); err != nil {
		return err
	}
	host, peer := hostLink(n), fmt.Sprintf("orbsimp%d", n)
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
	inside := fmt.Sprintf("link set lo up\nlink set %s name eth0\naddr add %s/24 dev eth0\n", peer, IP(n))
	if ipv6Enabled() {
		inside += fmt.Sprintf("addr add %s/64 dev eth0 nodad\n", IP6(n))
	}
	inside += fmt.Sprintf("link set eth0 up\nroute add default via %s\n", Gateway)
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
	IP   string
	IP6  string // "" when the host has no IPv6
}

// WriteHosts rewrites the managed block of the /etc/hosts that the machine
// whose init is pid sees, keeping everything outside the block.
func WriteHosts(pid int, self string, peers []Peer) error {
	path := fmt.Sprintf("/proc/%d/root/etc/hosts", pid)
	old, _ := os.ReadFile(path)
	tmp := path + ".orbsim-tmp"
	if err := os.WriteFile(tmp, []byte(HostsContent(string(old), self, peers)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// HostsContent is old with its managed block replaced by one for self and
// peers (appended at the end).
func HostsContent(old, self string, peers []Peer) string {
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
	fmt.Fprintf(&b, "%s\t%s\n", Gateway, HostAlias)
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
