package orbctl

import (
	"encoding/json"
	"testing"
)

func TestParseListAcrossVersions(t *testing.T) {
	cases := map[string]struct {
		out  string
		want []Machine
	}{
		"no machines before v0.15 prints null": {"null\n", []Machine{}},
		"no machines from v0.15 prints []":     {"[]\n", []Machine{}},
		"v0.11 has isolated at the top level and no config": {
			`[{"id":"01H1","name":"old","image":{"distro":"ubuntu","version":"lunar","arch":"arm64","variant":"default"},"isolated":true,"builtin":false,"state":"stopped"}]`,
			[]Machine{{Name: "old", ID: "01H1", State: "stopped", Distro: "ubuntu", Version: "lunar", Arch: "arm64", Variant: "default", Isolated: true}},
		},
		"v0.15 to 2.x": {
			`[
  {
    "id": "01K2G8TY5GM9C3CN95KCB4ZG8B",
    "name": "web-server",
    "image": {"distro": "ubuntu", "version": "jammy", "arch": "arm64", "variant": "default"},
    "config": {"isolated": false, "isolate_network": false, "forward_ssh_agent": true, "default_username": "ubuntu"},
    "builtin": false,
    "state": "running"
  },
  {"id": "01K2", "name": "void", "image": {"distro": "voidlinux", "version": "current", "arch": "amd64", "variant": "default"},
   "config": {"isolated": true, "default_username": "alice"}, "builtin": false, "state": "stopped"}
]
`,
			[]Machine{
				{Name: "web-server", ID: "01K2G8TY5GM9C3CN95KCB4ZG8B", State: "running", Distro: "ubuntu", Version: "jammy", Arch: "arm64", Variant: "default", DefaultUser: "ubuntu"},
				{Name: "void", ID: "01K2", State: "stopped", Distro: "voidlinux", Version: "current", Arch: "amd64", Variant: "default", DefaultUser: "alice", Isolated: true},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseList([]byte(tc.out))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := asJSON(got), asJSON(tc.want); g != w {
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func TestParseListRejectsGarbage(t *testing.T) {
	if _, err := ParseList([]byte("NAME STATE\nweb running\n")); err == nil {
		t.Fatal("text output parsed as JSON")
	}
}

func TestParseInfoAcrossVersions(t *testing.T) {
	size := uint64(962924544)
	rec := `{"id":"01K2","name":"web","image":{"distro":"debian","version":"bookworm","arch":"arm64","variant":"default"},"config":{"isolated":false,"default_username":"alice"},"builtin":false,"state":"running"}`
	base := Machine{Name: "web", ID: "01K2", State: "running", Distro: "debian", Version: "bookworm", Arch: "arm64", Variant: "default", DefaultUser: "alice"}
	withSize := base
	withSize.DiskSize = &size
	withIP := withSize
	withIP.IP4, withIP.IP6 = "198.19.249.2", "fd07:b51a:cc66::2"
	cases := map[string]struct {
		out  string
		want Machine
	}{
		"up to v1.9 prints the bare record":   {rec + "\n", base},
		"v1.10 wraps it with disk_size":       {`{"record":` + rec + `,"disk_size":962924544}`, withSize},
		"disk_size null when unknown":         {`{"record":` + rec + `,"disk_size":null}`, base},
		"v1.11.3 adds ip4 and ip6 if running": {`{"record":` + rec + `,"disk_size":962924544,"ip4":"198.19.249.2","ip6":"fd07:b51a:cc66::2"}`, withIP},
		"2.x abridged record with extra config": {
			`{"record": {"id": "01K2", "name": "web", "state": "running",
  "image": {"distro": "debian", "version": "bookworm", "arch": "arm64", "variant": "default"},
  "config": {"isolated": false, "isolate_network": false, "default_username": "alice", "http_port": 0}},
 "disk_size": 962924544}`, withSize},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseInfo([]byte(tc.out))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := asJSON(got), asJSON(tc.want); g != w {
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func TestParseInfoRejectsOutputWithoutAMachine(t *testing.T) {
	for _, out := range []string{"", "{}", "Name: web\n"} {
		if m, err := ParseInfo([]byte(out)); err == nil {
			t.Fatalf("%q parsed as %+v", out, m)
		}
	}
}

func TestParseVersion(t *testing.T) {
	v := ParseVersion("Version: 2.2.3 (2020300)\nCommit: 1a2b3c4 (v2.2.3)\n")
	if v.Version != "2.2.3" || v.Commit != "1a2b3c4 (v2.2.3)" || v.Simulator {
		t.Fatalf("%+v", v)
	}
	if !ParseVersion("Version: 2.2.3 (2020300)\nCommit: 5d6e7f8 (orbsim)\n").Simulator {
		t.Fatal("simulator not recognised")
	}
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
