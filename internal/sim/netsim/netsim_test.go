//go:build linux

package netsim

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHostsContentReplacesOnlyTheManagedBlock(t *testing.T) {
	old := "127.0.0.1\tlocalhost\n10.0.0.9 mine\n" + blockStart + "\n198.19.249.7\tgone.orb.local\n" + blockEnd + "\n"
	got := HostsContent(old, "web", "198.19.249.1", []Peer{{"web", "198.19.249.2", ""}, {"db", "198.19.249.3", ""}})
	assert.Equal(t, "127.0.0.1\tlocalhost\n10.0.0.9 mine\n"+blockStart+"\n127.0.1.1\tweb\n198.19.249.1\thost.orb.internal\n"+
		"198.19.249.2\tweb.orb.local\n198.19.249.3\tdb.orb.local\n"+blockEnd+"\n", got)
}

func TestHostsContentOfAnEmptyFileHasLocalhost(t *testing.T) {
	assert.Contains(t, HostsContent("", "web", "192.168.139.1", nil), "127.0.0.1\tlocalhost\n")
}

func TestIP6EmbedsTheWholeIPv4Address(t *testing.T) {
	assert.Equal(t, "fd07:b51a:cc66::c0a8:8b0a", IP6("192.168.139.10"), "canonical form, as `ip -6 addr` prints it")
	assert.NotEqual(t, IP6("198.19.249.10"), IP6("192.168.139.10"))
}

func TestHostsContentListsIPv6AfterIPv4(t *testing.T) {
	got := HostsContent("", "web", "198.19.249.1", []Peer{{"web", "198.19.249.2", "fd07:b51a:cc66::2"}, {"db", "198.19.249.3", "fd07:b51a:cc66::3"}})
	assert.Contains(t, got, "198.19.249.3\tdb.orb.local\nfd07:b51a:cc66::2\tweb.orb.local\nfd07:b51a:cc66::3\tdb.orb.local\n")
}

// OrbStack 2.x splits network.subnet4 as vmgr/vnet/netconf/dynamic.go does.
func TestPlan2SplitsTheSubnetIntoRelayAndMachines(t *testing.T) {
	p, err := Plan2(DefaultSubnet4)
	require.NoError(t, err)
	assert.Equal(t, "192.168.139.0/24", p.Machines.String())
	assert.Equal(t, "192.168.139.1", p.Gateway.String())
	assert.Equal(t, "192.168.139.10", p.First.String())
	assert.Equal(t, "192.168.139.247", p.Last.String())
	assert.Equal(t, "192.168.138.0/24", p.Relay.String())

	p, err = Plan2("10.20.31.7/23") // masked, as netconf does
	require.NoError(t, err)
	assert.Equal(t, "10.20.31.0/24", p.Machines.String())
	assert.Equal(t, "10.20.30.0/24", p.Relay.String())
}

func TestPlan2RefusesWhatNetconfRefuses(t *testing.T) {
	for value, msg := range map[string]string{
		"192.168.138.0/24": "subnet '192.168.138.0/24' is not a /23 prefix",
		"fd00::/23":        "subnet 'fd00::/23' is not an IPv4 prefix",
		"garbage":          "subnet 'invalid Prefix' is not an IPv4 prefix", // GH#2095's text
	} {
		_, err := Plan2(value)
		assert.EqualError(t, err, msg, value)
	}
}

func TestPlan1Is198_19_249(t *testing.T) {
	p := Plan1()
	assert.False(t, p.HasRelay())
	assert.Equal(t, "198.19.249.1", p.Gateway.String())
}
