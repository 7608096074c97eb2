package orbctl

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// recording is one file of testdata/orbctl: output of a real orbctl.
type recording struct {
	Kind     string `json:"kind"`
	OrbStack string `json:"orbstack"`
	Source   string `json:"source"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Exit     int    `json:"exit"`
	Machine  string `json:"machine"`
	Classify string `json:"classify"`
	Version  string `json:"version"`
	// Reconstructed is false or says what is not the recording itself.
	Reconstructed any `json:"reconstructed"`
}

// notParsed are the kinds the driver has no parser for, and why.
var notParsed = map[string]string{
	"no-machines-help": "the driver always passes -m, so orbctl never prints it to us",
	"config-keys":      "the driver passes keys through; it keeps no list of them",
	"subnet4-error":    "a VM log line, not orbctl output",
	"addresses":        "the driver depends on no address range",
}

func recordings(t *testing.T) map[string]recording {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "orbctl", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings in testdata/orbctl: %v", err)
	}
	out := map[string]recording{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r recording
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if r.Kind == "" || r.OrbStack == "" || r.Source == "" || r.Reconstructed == nil {
			t.Fatalf("%s: every recording names its kind, OrbStack version, source and what is reconstructed", f)
		}
		out[filepath.Base(f)] = r
	}
	return out
}

var kinds = map[string]error{"machine_not_found": ErrMachineNotFound, "failed": ErrFailed, "bad_argument": ErrBadArgument}

// Every recording is replayed through the driver's parser for its kind.
func TestCorpusReplaysThroughTheDriver(t *testing.T) {
	for name, r := range recordings(t) {
		t.Run(name, func(t *testing.T) {
			switch r.Kind {
			case "info-json":
				m, err := ParseInfo([]byte(r.Stdout))
				if err != nil {
					t.Fatal(err)
				}
				var raw struct {
					Record struct {
						ID, Name, State string
						Image           struct{ Distro, Version, Arch string }
						Config          map[string]any
					}
					DiskSize *uint64 `json:"disk_size"`
				}
				if err := json.Unmarshal([]byte(r.Stdout), &raw); err != nil {
					t.Fatal(err)
				}
				rec := raw.Record
				if m.ID != rec.ID || m.Name != rec.Name || m.State != rec.State || m.Distro != rec.Image.Distro ||
					m.Version != rec.Image.Version || m.Arch != rec.Image.Arch ||
					m.DefaultUser != rec.Config["default_username"] || m.Isolated != rec.Config["isolated"] ||
					m.DiskSize == nil || *m.DiskSize != *raw.DiskSize {
					t.Fatalf("parsed %+v from %s", m, r.Stdout)
				}
			case "error", "run-missing":
				msg := trimUsage(r.Stderr)
				want, ok := kinds[r.Classify]
				if !ok {
					t.Fatalf("classify %q is not a kind this test knows", r.Classify)
				}
				if got := classify(msg); !errors.Is(got, want) {
					t.Fatalf("classify(%q) = %v, want %v", msg, got, want)
				}
				if r.Kind == "run-missing" && !IsRunMachineNotFound(r.Stderr, r.Machine) {
					t.Fatalf("IsRunMachineNotFound(%q, %q) = false", r.Stderr, r.Machine)
				}
				if r.Kind == "run-missing" && IsRunMachineNotFound(r.Stderr, r.Machine+"x") {
					t.Fatalf("the line names %q, not another machine", r.Machine)
				}
			case "list-text":
				// ParseListAddresses reads the IP column (1.11.3+); a table
				// without one must give no addresses, not other columns.
				want := map[string]string{}
				for _, line := range strings.Split(r.Stdout, "\n")[2:] {
					if f := strings.Fields(line); len(f) > 0 && strings.Count(f[len(f)-1], ".") == 3 {
						want[f[0]] = f[len(f)-1]
					}
				}
				got := ParseListAddresses(r.Stdout)
				if len(got) != len(want) {
					t.Fatalf("ParseListAddresses = %v, want %v", got, want)
				}
				for k, v := range want {
					if got[k] != v {
						t.Fatalf("ParseListAddresses = %v, want %v", got, want)
					}
				}
			case "version":
				v := ParseVersion(r.Stdout)
				if v.Version != r.Version || v.Simulator || !strings.HasPrefix(v.Commit, strings.Fields(strings.Split(r.Stdout, "\n")[1])[1]) {
					t.Fatalf("parsed %+v", v)
				}
				if VersionCode(v.Version) == 0 || !strings.Contains(r.Stdout, "(") {
					t.Fatalf("version %q has no code", v.Version)
				}
			default:
				if why, ok := notParsed[r.Kind]; ok {
					t.Skipf("not parsed by the driver: %s", why)
				}
				t.Fatalf("unknown kind %q: add a replay here or a reason to notParsed", r.Kind)
			}
		})
	}
}

// The code in parentheses is major·10⁶ + minor·10⁴ + patch·10², as every
// recorded `version` shows.
func TestCorpusVersionCodes(t *testing.T) {
	for name, r := range recordings(t) {
		if r.Kind != "version" {
			continue
		}
		line := strings.Split(r.Stdout, "\n")[0]
		code := strings.Trim(strings.Fields(line)[2], "()")
		if want := VersionCode(r.Version); code != strconv.Itoa(want) {
			t.Errorf("%s: code %s, VersionCode says %d", name, code, want)
		}
	}
}
