//go:build linux

package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The simulator against testdata/orbctl: output of real orbctl that users
// pasted in public. At each recording's version the simulator must print the
// same field names, shapes and text; IDs, dates, sizes and addresses differ.
// The simulator reads the files as plain JSON here, with none of the driver's
// parsing code.

type recording struct {
	Kind          string   `json:"kind"`
	SimulateAs    string   `json:"simulate_as"`
	Stdout        *string  `json:"stdout"`
	Stderr        string   `json:"stderr"`
	Exit          int      `json:"exit"`
	Machine       string   `json:"machine"`
	KeysPresent   []string `json:"keys_present"`
	KeysAbsent    []string `json:"keys_absent"`
	NetconfClause string   `json:"netconf_clause"`
	Gateway       string   `json:"gateway"`
	MachineIP4    string   `json:"machine_ip4"`
	RelayIP4      string   `json:"relay_ip4"`
}

func loadRecordings(t *testing.T) map[string]recording {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "orbctl", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "testdata/orbctl has the recordings")
	out := map[string]recording{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var r recording
		require.NoError(t, json.Unmarshal(b, &r), f)
		require.NotEmpty(t, r.SimulateAs, "%s names the version to compare at", f)
		out[filepath.Base(f)] = r
	}
	return out
}

// jsonShape is every key path of a JSON document with its JSON type.
func jsonShape(t *testing.T, doc string) map[string]string {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(doc), &v), doc)
	shape := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			shape[path] = "object"
			for k, c := range x {
				walk(path+"."+k, c)
			}
		case []any:
			shape[path] = "array"
		case string:
			shape[path] = "string"
		case bool:
			shape[path] = "bool"
		case float64:
			shape[path] = "number"
		case nil:
			shape[path] = "null"
		}
	}
	walk("", v)
	return shape
}

func lines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

func TestConformsToRecordings(t *testing.T) {
	t.Parallel()
	for name, r := range loadRecordings(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t)
			at := s.with("ORBSIM_VERSION=" + r.SimulateAs)
			switch r.Kind {
			case "info-json":
				s.machine(r.Machine)
				got := jsonShape(t, at.ok("info", r.Machine, "-f", "json"))
				want := jsonShape(t, *r.Stdout)
				for path, typ := range want {
					assert.Equal(t, typ, got[path], "field %s", path)
				}
			case "error":
				if strings.Contains(r.Stderr, "key not found") {
					t.Skip("a bug of 1.6.4 on a fresh install; the simulator does not reproduce it")
				}
				if strings.Contains(r.Stderr, "machine not found") {
					assert.Equal(t, result{*r.Stdout, r.Stderr, r.Exit}, at.orbctl("info", "-f", "json", r.Machine))
					return
				}
				// create's server errors: the same prefix, up to the step
				// that failed (the simulator cannot fail to download).
				prefix := "[-32098] create '" + r.Machine + "': make rootfs: "
				require.True(t, strings.HasPrefix(r.Stderr, prefix), r.Stderr)
				got := at.orbctl("create", "debian:no-such-release", r.Machine)
				assert.Equal(t, r.Exit, got.Code)
				assert.True(t, strings.HasPrefix(got.Stderr, prefix), "%q starts with %q", got.Stderr, prefix)
			case "run-missing":
				// Recorded on a terminal; script(1) merges stderr into stdout.
				got := at.runTTY("", "run", "-m", r.Machine, "true")
				assert.Equal(t, result{Stdout: r.Stderr, Code: r.Exit}, got)
			case "list-text":
				s.machine("centos")
				s.machine("ubuntu")
				at.ok("stop", "centos")
				got := lines(at.runTTY("", "list").Stdout)
				want := lines(*r.Stdout)
				assert.Equal(t, strings.Fields(want[0]), strings.Fields(got[0]), "header")
				assert.Equal(t, strings.Fields(want[1]), strings.Fields(got[1]), "dashes")
				for _, row := range got[2:] {
					assert.Len(t, strings.Fields(row), len(strings.Fields(want[2])), "columns of %q", row)
				}
				assert.Regexp(t, `^centos +stopped +`, got[2])
			case "no-machines-help":
				got := at.orbctl("run", "true")
				assert.Equal(t, r.Exit, got.Code)
				want, have := lines(r.Stderr), lines(got.Stderr)
				require.Len(t, have, len(want), got.Stderr)
				for i := range want {
					if strings.Contains(want[i], "docker run ...") {
						continue // abridged in the recording
					}
					assert.Equal(t, want[i], have[i])
				}
			case "version":
				got := lines(at.ok("version"))
				want := lines(*r.Stdout)
				require.Len(t, got, 2)
				assert.Equal(t, want[0], got[0])
				assert.Regexp(t, `^Commit: [0-9a-f]{40} \(.+\)$`, got[1])
			case "config-keys":
				s.machine("keys")
				show := at.ok("config", "show")
				keys := map[string]bool{}
				for _, l := range lines(show) {
					k, v, ok := strings.Cut(l, ": ")
					assert.True(t, ok && v != "", "every line has a value: %q", l)
					keys[k] = true
				}
				for _, k := range r.KeysPresent {
					assert.True(t, keys[strings.ReplaceAll(k, "NAME", "keys")], "has %s", k)
				}
				for _, k := range r.KeysAbsent {
					assert.False(t, keys[strings.ReplaceAll(k, "NAME", "keys")], "has no %s", k)
				}
			case "subnet4-error":
				got := at.orbctl("config", "set", "network.subnet4", "not-a-prefix")
				assert.Equal(t, 1, got.Code)
				assert.Contains(t, got.Stderr, r.NetconfClause)
			case "addresses":
				s.machine("addr1")
				s.machine("addr2")
				_, raw := at.info("addr2")
				same24 := func(a, b string) bool {
					return netip.PrefixFrom(netip.MustParseAddr(b), 24).Masked().Contains(netip.MustParseAddr(a))
				}
				assert.True(t, same24(raw["ip4"].(string), r.MachineIP4), "machine %v in the /24 of %s", raw["ip4"], r.MachineIP4)
				relay := at.resolve("addr1", "addr2.orb.local")
				assert.True(t, same24(relay, r.RelayIP4), "relay %s in the /24 of %s", relay, r.RelayIP4)
				assert.Equal(t, r.Gateway, at.resolve("addr1", "host.orb.internal"))
			default:
				t.Fatalf("kind %q has no comparison: add one here", r.Kind)
			}
		})
	}
}

// The corpus is sorted into kinds this file knows; a typo in a new file's
// kind would otherwise only show up as a failure deep in a subtest.
func TestRecordingKindsAreKnown(t *testing.T) {
	known := regexp.MustCompile(`^(info-json|error|run-missing|list-text|no-machines-help|version|config-keys|subnet4-error|addresses)$`)
	var bad []string
	for name, r := range loadRecordings(t) {
		if !known.MatchString(r.Kind) {
			bad = append(bad, name+": "+r.Kind)
		}
	}
	sort.Strings(bad)
	assert.Empty(t, bad)
}
