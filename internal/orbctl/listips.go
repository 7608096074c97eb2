package orbctl

import (
	"context"
	"net"
	"strings"
)

// ListAddresses reads each machine's IPv4 address from `orbctl list`'s table,
// whose last column is IP from OrbStack 1.11.3 (`list -f json` has no
// addresses). Only names whose line ends in an IPv4 address are in the map:
// a stopped machine, an older OrbStack or a table of another shape give none,
// and the caller asks `info` instead.
func (c *Client) ListAddresses(ctx context.Context) (map[string]string, error) {
	out, err := c.output(ctx, "", "list")
	if err != nil {
		return nil, err
	}
	return ParseListAddresses(string(out)), nil
}

// ParseListAddresses reads `orbctl list`'s table (see ListAddresses).
func ParseListAddresses(out string) map[string]string {
	ips := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if ip := net.ParseIP(f[len(f)-1]); ip != nil && ip.To4() != nil {
			ips[f[0]] = f[len(f)-1]
		}
	}
	return ips
}
