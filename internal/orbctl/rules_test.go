package orbctl

import (
	"reflect"
	"testing"
)

func TestValidNameIsOrbStacksRule(t *testing.T) {
	for name, want := range map[string]bool{
		"web": true, "db-1.local": true, "01K2G8TY5GM9C3CN95KCB4ZG8B": true,
		"": false, "a": false, "-web": false, "web_1": false, ".web": false, "docker": false, "default": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseSizeReadsBinaryUnits(t *testing.T) {
	for in, want := range map[string]int64{"4G": 4 << 30, "2048M": 2 << 30, "1.5G": 3 << 29, "512KiB": 512 << 10, "8gb": 8 << 30, "100": 100} {
		if got, err := ParseSize(in, 1); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if got, _ := ParseSize("4096", 1<<20); got != 4<<30 {
		t.Errorf("a plain number is in the given unit: %d", got)
	}
	for _, bad := range []string{"lots", "8X", "-1G", ""} {
		if _, err := ParseSize(bad, 1); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestLimitsBecomeMachineSettingsInOrbStacksUnits(t *testing.T) {
	l, err := ParseLimits(2, "4G", "32G")
	if err != nil {
		t.Fatal(err)
	}
	l.Mounts = []string{"/a:/a", "/b:/b"}
	want := []Setting{
		{`machine."a.b".cpu`, "2"}, {`machine."a.b".memory_mib`, "4096"},
		{`machine."a.b".disk_bytes`, "34359738368"}, {`machine."a.b".mounts`, "/a:/a,/b:/b"},
	}
	if got := l.Settings("a.b"); !reflect.DeepEqual(got, want) {
		t.Fatalf("settings %v, want %v", got, want)
	}
	var o CreateOptions
	l.ApplyTo(&o)
	if o.CPUs != 2 || o.Memory != "4096M" || o.Disk != "32768M" {
		t.Fatalf("create options %+v", o)
	}
	if _, err := ParseLimits(0, "lots", ""); err == nil || err.(*Error).Option != "memory" {
		t.Fatalf("bad memory: %v", err)
	}
}

func TestVersionCodeIsOrbctlsNumber(t *testing.T) {
	for in, want := range map[string]int{"2.2.3": 2020300, "1.11.3": 1110300, "2.1": 2010000, "0.14.0": 140000, "dev": 0} {
		if got := VersionCode(in); got != want {
			t.Errorf("VersionCode(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestDifferencesCompareAfterOrbStacksAliases(t *testing.T) {
	yes, no := true, false
	m := Machine{Distro: "debian", Version: "bookworm", Arch: "arm64", Config: map[string]any{"isolated": false}}
	for _, w := range []Wanted{{Image: "debian:12"}, {Image: "debian"}, {Image: "debian:Bookworm"}, {Arch: "arm64"}, {Isolated: &no}, {IsolateNetwork: &yes}} {
		if d, err := Differences(m, w); err != nil || len(d) != 0 {
			t.Errorf("%+v: %v, %v; want no difference", w, d, err)
		}
	}
	d, _ := Differences(m, Wanted{Image: "ubuntu:24.04", Arch: "amd64", Isolated: &yes})
	want := []string{"distro debian (want ubuntu)", "version bookworm (want noble)", "arch arm64 (want amd64)", "isolated false (want true)"}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("differences %q, want %q", d, want)
	}
	arch := Machine{Distro: "archlinux", Version: "current"}
	if d, _ := Differences(arch, Wanted{Image: "arch"}); len(d) != 0 {
		t.Fatalf("arch is archlinux: %v", d)
	}
}
