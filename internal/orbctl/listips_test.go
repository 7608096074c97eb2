package orbctl

import (
	"reflect"
	"testing"
)

func TestListAddressesReadsTheIPColumnOfRunningMachines(t *testing.T) {
	// As on a terminal (with a header) and without; SIZE has a space; a stopped
	// machine has no IP; OrbStack before 1.11.3 has no IP column at all.
	table := `NAME     STATE    DISTRO  VERSION   ARCH   SIZE     IP
----     -----    ------  -------   ----   ----     --
web      running  debian  bookworm  arm64  1.2 GB   198.19.249.2
db.prod  running  ubuntu  noble     arm64  65.5 kB  198.19.249.3
idle     stopped  alpine  3.20      arm64  12 MB
old      running  debian  bookworm  arm64  1.2 GB
`
	got := ParseListAddresses(table)
	want := map[string]string{"web": "198.19.249.2", "db.prod": "198.19.249.3"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
}
