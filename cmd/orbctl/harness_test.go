//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/vm"
	"github.com/stretchr/testify/require"
)

// The conformance suite drives the real binary, built once, as a user
// would: every test gets its own ORBSIM_HOME and deletes its machines.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orbsim-bin-")
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "orbctl"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building orbctl: %v\n%s", err, out)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // TestRefusesWithoutIsolation runs it as nobody
	os.Symlink("orbctl", filepath.Join(dir, "orb"))
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	Stdout, Stderr string
	Code           int
}

type sim struct {
	t    *testing.T
	home string
	env  []string
	dir  string // cwd of invocations
}

// newSim is a fresh simulator; it skips tests that need machines where
// isolation is unavailable (not root, no overlayfs, ...).
func newSim(t *testing.T) *sim {
	t.Helper()
	if err := vm.Preflight(); err != nil {
		if os.Geteuid() == 0 {
			// As root (CI) isolation must work: a skip would hide a broken setup.
			t.Fatalf("isolation unavailable even as root: %v", err)
		}
		t.Skipf("needs isolation: %v", err)
	}
	return newBareSim(t)
}

// newBareSim does not require isolation (for tests of the refusal itself).
func newBareSim(t *testing.T) *sim {
	home := t.TempDir()
	s := &sim{t: t, home: home, dir: home, env: []string{"ORBSIM_HOME=" + home, "ORBSIM_MAC_USER=dev"}}
	t.Cleanup(func() {
		if vm.Preflight() == nil {
			if r := s.run("orbctl", "delete", "-a", "-f"); r.Code != 0 {
				t.Errorf("cleanup: orbctl delete -a -f: %+v", r)
			}
		}
	})
	return s
}

// with returns a copy of s with extra environment variables.
func (s *sim) with(env ...string) *sim {
	c := *s
	c.env = append(append([]string{}, s.env...), env...)
	return &c
}

func (s *sim) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/root"}, s.env...)
	cmd.Dir = s.dir
	return cmd
}

func (s *sim) runIn(stdin string, name string, args ...string) result {
	s.t.Helper()
	cmd := s.command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("%s %v: %v", name, args, err)
	}
	return result{out.String(), errb.String(), code}
}

func (s *sim) run(name string, args ...string) result { return s.runIn("", name, args...) }

// orbctl runs bin/orbctl.
func (s *sim) orbctl(args ...string) result { s.t.Helper(); return s.run("orbctl", args...) }

// ok runs orbctl and fails the test unless it exits 0.
func (s *sim) ok(args ...string) string {
	s.t.Helper()
	r := s.orbctl(args...)
	require.Equal(s.t, 0, r.Code, "orbctl %v: stdout=%q stderr=%q", args, r.Stdout, r.Stderr)
	return r.Stdout
}

// machine creates a debian machine.
func (s *sim) machine(name string, flags ...string) {
	s.t.Helper()
	s.ok(append(append([]string{"create"}, flags...), "debian", name)...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting: %s", what)
}

func newCmd(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }

// runTTY runs orbctl with a terminal on stdin/stdout (util-linux `script`),
// feeding input. Output comes back with terminal line endings removed.
func (s *sim) runTTY(input string, args ...string) result {
	s.t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		s.t.Skip("needs util-linux script for a terminal")
	}
	line := filepath.Join(binDir, "orbctl")
	for _, a := range args {
		line += " '" + a + "'"
	}
	cmd := exec.Command("script", "-qec", line, "/dev/null")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "TERM=dumb"}, s.env...)
	cmd.Dir = s.dir
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return result{Stdout: strings.ReplaceAll(string(out), "\r\n", "\n"), Code: code}
}
