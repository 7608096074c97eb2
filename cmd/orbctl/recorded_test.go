//go:build linux

package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Behaviours that follow public recordings of real orbctl, version by
// version (reference §10, issue 14). testdata/orbctl holds the recordings
// themselves; conformance_test.go compares our output against each.

func addr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	require.NoError(t, err, s)
	return a
}

// resolve is what NAME.orb.local resolves to inside machine from.
func (s *sim) resolve(from, name string) string {
	s.t.Helper()
	out := s.ok("run", "-m", from, "getent", "ahostsv4", name)
	return strings.Fields(out)[0]
}

func TestAddresses2x(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("addra")
	s.machine("addrb")
	_, raw := s.info("addrb")
	ip := addr(t, raw["ip4"].(string))
	t.Run("machines get 192.168.139.10-247", func(t *testing.T) {
		assert.True(t, netip.MustParsePrefix("192.168.139.0/24").Contains(ip), ip)
		assert.GreaterOrEqual(t, int(ip.As4()[3]), 10)
		assert.LessOrEqual(t, int(ip.As4()[3]), 247)
	})
	t.Run("NAME.orb.local is a relay address in 192.168.138.0/24, not the machine's", func(t *testing.T) {
		relay := addr(t, s.resolve("addra", "addrb.orb.local"))
		assert.True(t, netip.MustParsePrefix("192.168.138.0/24").Contains(relay), relay)
		assert.NotEqual(t, ip, relay)
		s.ok("run", "-m", "addra", "ping", "-4", "-c1", "-W2", "addrb.orb.local")
		out, err := execOut("ping", "-c1", "-W2", relay.String())
		assert.NoError(t, err, "the host reaches the relay too: %s", out)
	})
	t.Run("the relay is not on the machine's eth0", func(t *testing.T) {
		assert.NotContains(t, s.ok("run", "-m", "addrb", "ip", "-4", "-o", "addr", "show", "dev", "eth0"), "192.168.138.")
	})
	t.Run("the gateway and host.orb.internal are 192.168.139.1", func(t *testing.T) {
		assert.Equal(t, "192.168.139.1", s.resolve("addra", "host.orb.internal"))
		assert.Contains(t, s.ok("run", "-m", "addra", "ip", "-4", "route", "show", "default"), "via 192.168.139.1 ")
	})
}

func TestAddresses1x(t *testing.T) {
	t.Parallel()
	s := newSim(t).with("ORBSIM_VERSION=1.11.3")
	s.machine("onea")
	s.machine("oneb")
	_, raw := s.info("oneb")
	ip := addr(t, raw["ip4"].(string))
	assert.True(t, netip.MustParsePrefix("198.19.249.0/24").Contains(ip), ip)
	assert.Equal(t, ip.String(), s.resolve("onea", "oneb.orb.local"), "1.x resolves NAME.orb.local to the machine itself")
	assert.Equal(t, "198.19.249.1", s.resolve("onea", "host.orb.internal"))
}

func TestSubnet4(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	t.Run("only an IPv4 /23 is accepted, with OrbStack's netconf texts", func(t *testing.T) {
		r := s.orbctl("config", "set", "network.subnet4", "192.168.138.0/24")
		assert.Equal(t, result{"", "[-32098] subnet '192.168.138.0/24' is not a /23 prefix\n", 1}, r)
		r = s.orbctl("config", "set", "network.subnet4", "nonsense")
		assert.Equal(t, result{"", "[-32098] subnet 'invalid Prefix' is not an IPv4 prefix\n", 1}, r)
		assert.Equal(t, "192.168.138.0/23\n", s.ok("config", "get", "network.subnet4"))
	})
	t.Run("a new subnet applies after OrbStack restarts", func(t *testing.T) {
		assert.Equal(t, "Restart OrbStack with \"orbctl stop\" to apply changes.\n", s.ok("config", "set", "network.subnet4", "198.18.10.0/23"))
		s.machine("subnet")
		_, raw := s.info("subnet")
		assert.True(t, strings.HasPrefix(raw["ip4"].(string), "192.168.139."), "not before a restart: %v", raw["ip4"])
		s.ok("stop")
		s.ok("start", "subnet")
		_, raw = s.info("subnet")
		ip := addr(t, raw["ip4"].(string))
		assert.True(t, netip.MustParsePrefix("198.18.11.0/24").Contains(ip), ip)
		relay := addr(t, s.resolve("subnet", "subnet.orb.local"))
		assert.True(t, netip.MustParsePrefix("198.18.10.0/24").Contains(relay), relay)
	})
}

func TestConfigKeysByVersion(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("keys")
	lines := func(v string) map[string]string {
		out := s.with("ORBSIM_VERSION="+v).ok("config", "show")
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			k, val, ok := strings.Cut(l, ": ")
			require.True(t, ok, "every line is 'key: value' with a value: %q", l)
			m[k] = val
		}
		return m
	}
	t.Run("2.0.4 has the keys of its recording and no 2.1 machine keys", func(t *testing.T) {
		m := lines("2.0.4")
		for _, k := range []string{"machines.forward_ports", "machines.expose_ports_to_lan", "docker.expose_ports_to_lan", "power.pause_in_sleep", "machine.keys.username"} {
			assert.Contains(t, m, k)
		}
		for _, k := range []string{"power.pause_on_sleep", "machine.keys.cpu", "machine.keys.isolated", "data_dir"} {
			assert.NotContains(t, m, k)
		}
		s.with("ORBSIM_VERSION=2.0.4").ok("config", "set", "machines.forward_ports", "false")
		assert.Equal(t, "false\n", s.with("ORBSIM_VERSION=2.0.4").ok("config", "get", "machines.forward_ports"))
		r := s.with("ORBSIM_VERSION=2.0.4").orbctl("config", "set", "power.pause_on_sleep", "false")
		assert.Equal(t, result{"", "Unknown configuration key: power.pause_on_sleep\n", 1}, r)
	})
	t.Run("2.1 adds the per-machine limits", func(t *testing.T) {
		assert.Contains(t, lines("2.1.0"), "machine.keys.cpu")
	})
	t.Run("1.x has power.pause_on_sleep", func(t *testing.T) {
		m := lines("1.11.3")
		assert.Contains(t, m, "power.pause_on_sleep")
		assert.NotContains(t, m, "machines.forward_ports")
	})
	t.Run("a boolean key refuses a non-boolean", func(t *testing.T) {
		r := s.orbctl("config", "set", "rosetta", "maybe")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "Error: invalid value for rosetta: maybe")
	})
}

func TestRunMissingMachine(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("present")
	t.Run("without a terminal it is a silent exit 1", func(t *testing.T) {
		assert.Equal(t, result{"", "", 1}, s.orbctl("run", "-m", "gone", "true"))
	})
	t.Run("on a terminal recent versions print the server's error", func(t *testing.T) {
		r := s.runTTY("", "run", "-m", "gone", "true")
		assert.Equal(t, result{"[-32098] machine not found: 'gone'\n", "", 1}, r)
	})
	t.Run("0.x printed it bare", func(t *testing.T) {
		r := s.with("ORBSIM_VERSION=0.17.0").runTTY("", "run", "-m", "gone", "true")
		assert.Equal(t, result{"machine not found: gone\n", "", 1}, r)
	})
	t.Run("ORBSIM_RUN_MISSING=print prints it without a terminal too", func(t *testing.T) {
		r := s.with("ORBSIM_RUN_MISSING=print").orbctl("run", "-m", "gone", "true")
		assert.Equal(t, result{"", "[-32098] machine not found: 'gone'\n", 1}, r)
		assert.Equal(t, 1, s.with("ORBSIM_RUN_MISSING=loud").orbctl("version").Code, "a bad value is refused")
	})
}

func TestIsolatedPushPull(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("iso", "--isolated")
	dir := t.TempDir()
	s.dir = dir
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in.txt"), []byte("in\n"), 0o600))
	t.Run("before 2.2.0 an isolated machine cannot be pushed to (GH#2469)", func(t *testing.T) {
		r := s.with("ORBSIM_VERSION=2.1.0").orbctl("push", "-m", "iso", "in.txt")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "No such file or directory")
	})
	t.Run("from 2.2.0 push and pull work, and the machine still has no /mnt/mac", func(t *testing.T) {
		v := s.with("ORBSIM_VERSION=2.2.0")
		v.ok("push", "-m", "iso", "in.txt", "copied.txt")
		assert.Equal(t, "in\n", s.ok("run", "-m", "iso", "-w", "", "cat", "copied.txt"))
		s.ok("run", "-m", "iso", "-w", "", "sh", "-c", "echo out > out.txt")
		v.ok("pull", "-m", "iso", "out.txt", filepath.Join(dir, "out.txt"))
		b, err := os.ReadFile(filepath.Join(dir, "out.txt"))
		require.NoError(t, err)
		assert.Equal(t, "out\n", string(b))
		assert.Equal(t, 1, s.orbctl("run", "-m", "iso", "test", "-e", "/mnt/mac").Code)
	})
	t.Run("a missing source reads as cp's error", func(t *testing.T) {
		r := s.orbctl("push", "-m", "iso", "nope.txt")
		assert.Equal(t, result{"", "cp: cannot stat '/mnt/mac" + filepath.Join(dir, "nope.txt") + "': No such file or directory\n", 1}, r)
	})
}

func TestMachineDetailsFromRecordings(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("detail")
	t.Run("/tmp is a tmpfs: gone after stop and in a clone", func(t *testing.T) {
		s.ok("run", "-m", "detail", "sh", "-c", "echo x > /tmp/kept && echo y > ~/home-file")
		s.ok("clone", "detail", "detail-copy")
		assert.Equal(t, "", s.ok("run", "-m", "detail-copy", "ls", "/tmp"))
		assert.Equal(t, "y\n", s.ok("run", "-m", "detail-copy", "-w", "", "cat", "home-file"))
		s.ok("stop", "detail")
		assert.Equal(t, "", s.ok("run", "-m", "detail", "ls", "/tmp"))
	})
	t.Run("the default user is in sudo on debian, wheel elsewhere", func(t *testing.T) {
		assert.Contains(t, strings.Fields(s.ok("run", "-m", "detail", "id", "-nG")), "sudo")
		s.ok("create", "fedora", "detail-fedora")
		assert.Contains(t, strings.Fields(s.ok("run", "-m", "detail-fedora", "id", "-nG")), "wheel")
	})
	t.Run("-w exists from 1.5.0 (GH#1005)", func(t *testing.T) {
		r := s.with("ORBSIM_VERSION=1.4.3").orbctl("run", "-m", "detail", "-w", "/", "true")
		assert.Equal(t, 1, r.Code)
		assert.True(t, strings.HasPrefix(r.Stderr, "Error: unknown flag -w\n"), r.Stderr)
		assert.Equal(t, "/\n", s.with("ORBSIM_VERSION=1.5.0").ok("run", "-m", "detail", "-w", "/", "pwd"))
	})
	t.Run("usage names the program as invoked (GH#2122)", func(t *testing.T) {
		r := s.run("orb", "run", "--nope")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "Usage:\n  orb run [flags]")
		assert.Contains(t, s.orbctl("run", "--nope").Stderr, "Usage:\n  orbctl run [flags]")
	})
	t.Run("a one-character name is refused everywhere", func(t *testing.T) {
		assert.Equal(t, result{"", "[-32098] create 'a': invalid machine name 'a'\n", 1}, s.orbctl("create", "debian", "a"))
		assert.Equal(t, 1, s.orbctl("clone", "detail", "b").Code)
		assert.Equal(t, 1, s.orbctl("rename", "detail", "c").Code)
	})
}
