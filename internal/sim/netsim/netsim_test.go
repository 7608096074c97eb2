//go:build linux

package netsim

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestHostsContentReplacesOnlyTheManagedBlock(t *testing.T) {
	old := "127.0.0.1\tlocalhost\n10.0.0.9 mine\n" + blockStart + "\n198.19.249.7\tgone.orb.local\n" + blockEnd + "\n"
	got := HostsContent(old, "web", []Peer{{"web", "198.19.249.2", ""}, {"db", "198.19.249.3", ""}})
	assert.Equal(t, "127.0.0.1\tlocalhost\n10.0.0.9 mine\n"+blockStart+"\n127.0.1.1\tweb\n198.19.249.1\thost.orb.internal\n"+
		"198.19.249.2\tweb.orb.local\n198.19.249.3\tdb.orb.local\n"+blockEnd+"\n", got)
}

func TestHostsContentOfAnEmptyFileHasLocalhost(t *testing.T) {
	assert.Contains(t, HostsContent("", "web", nil), "127.0.0.1\tlocalhost\n")
}

func TestAddresses(t *testing.T) {
	assert.Equal(t, "198.19.249.10", IP(10))
	assert.Equal(t, "fd07:b51a:cc66::a", IP6(10), "canonical form, as `ip -6 addr` prints it")
}

func TestHostsContentListsIPv6AfterIPv4(t *testing.T) {
	got := HostsContent("", "web", []Peer{{"web", "198.19.249.2", "fd07:b51a:cc66::2"}, {"db", "198.19.249.3", "fd07:b51a:cc66::3"}})
	assert.Contains(t, got, "198.19.249.3\tdb.orb.local\nfd07:b51a:cc66::2\tweb.orb.local\nfd07:b51a:cc66::3\tdb.orb.local\n")
}
