package orbctl_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func executable(t *testing.T, path string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestLocatePrefersTheOverride(t *testing.T) {
	dir := t.TempDir()
	override := filepath.Join(dir, "my-orbctl")
	executable(t, override)
	onPath := filepath.Join(dir, "bin", "orbctl")
	executable(t, onPath)
	t.Setenv("PATH", filepath.Dir(onPath))
	got, err := orbctl.Locate(env(map[string]string{orbctl.EnvOverride: override}))
	if err != nil || got != override {
		t.Fatalf("got %q, %v; want the override", got, err)
	}
	got, err = orbctl.Locate(env(nil))
	if err != nil || got != onPath {
		t.Fatalf("got %q, %v; want the one on PATH", got, err)
	}
}

func TestLocateDoesNotFallBackFromABrokenOverride(t *testing.T) {
	dir := t.TempDir()
	executable(t, filepath.Join(dir, "orbctl"))
	t.Setenv("PATH", dir)
	_, err := orbctl.Locate(env(map[string]string{orbctl.EnvOverride: "/nonexistent/orbctl"}))
	if !errors.Is(err, orbctl.ErrOrbctlNotFound) || !strings.Contains(err.Error(), "/nonexistent/orbctl") {
		t.Fatalf("got %v", err)
	}
}

func TestLocateFindsThePerUserInstall(t *testing.T) {
	home := t.TempDir()
	t.Setenv("PATH", t.TempDir())
	want := filepath.Join(home, ".orbstack", "bin", "orbctl")
	executable(t, want)
	got, err := orbctl.Locate(env(map[string]string{"HOME": home}))
	if err != nil || got != want {
		// /usr/local/bin/orbctl wins if this machine has one (the simulator installed there).
		if _, statErr := os.Stat("/usr/local/bin/orbctl"); statErr != nil {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
}

func TestLocateSaysWhereItLooked(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := os.Stat("/usr/local/bin/orbctl"); err == nil {
		t.Skip("this machine has /usr/local/bin/orbctl")
	}
	_, err := orbctl.Locate(env(map[string]string{"HOME": "/nonexistent-home"}))
	var oe *orbctl.Error
	if !errors.As(err, &oe) || !errors.Is(err, orbctl.ErrOrbctlNotFound) {
		t.Fatalf("got %v", err)
	}
	if !slices.Contains(oe.Searched, "/Applications/OrbStack.app/Contents/MacOS/bin/orbctl") ||
		!slices.Contains(oe.Searched, "/nonexistent-home/.orbstack/bin/orbctl") {
		t.Fatalf("searched %v", oe.Searched)
	}
}

// fakeClient is a Client on the fake orbctl that records every argv.
func fakeClient(t *testing.T) (*orbctl.Client, func() []string) {
	c := orbctl.New(orbctltest.Fake(t))
	logFile := filepath.Join(t.TempDir(), "argv.log")
	t.Setenv("FAKE_ORBCTL_LOG", logFile)
	return c, func() []string {
		b, _ := os.ReadFile(logFile)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

func TestMissingMachineIsATypedErrorWithOrbctlsMessage(t *testing.T) {
	c, _ := fakeClient(t)
	_, err := c.Info(context.Background(), "ghost")
	var oe *orbctl.Error
	if !errors.Is(err, orbctl.ErrMachineNotFound) || !errors.As(err, &oe) {
		t.Fatalf("got %v", err)
	}
	if oe.Stderr != "[-32098] machine not found: 'ghost'" || oe.ExitCode != 1 || oe.Machine != "ghost" ||
		strings.Join(oe.Args, " ") != "info ghost -f json" {
		t.Fatalf("error %+v", oe)
	}
}

func TestCreatingADuplicateIsErrMachineExists(t *testing.T) {
	c, _ := fakeClient(t)
	orbctltest.AddMachine(t, "web", "running")
	err := c.Create(context.Background(), orbctl.CreateOptions{Image: "debian", Name: "web"})
	if !errors.Is(err, orbctl.ErrMachineExists) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("got %v", err)
	}
}

func TestOrbStackNotRunningIsTyped(t *testing.T) {
	c, _ := fakeClient(t)
	t.Setenv("FAKE_ORBCTL_FAIL", "[-32098] OrbStack is not running: failed to start OrbStack")
	_, err := c.List(context.Background())
	if !errors.Is(err, orbctl.ErrOrbStackNotRunning) {
		t.Fatalf("got %v", err)
	}
}

func TestCobraUsageErrorIsABadArgumentWithoutTheUsageText(t *testing.T) {
	c, _ := fakeClient(t)
	t.Setenv("FAKE_ORBCTL_FAIL", "Error: invalid distro: foo\nUsage:\n  orbctl create [flags] DISTRO[:VERSION] [MACHINE_NAME]\n")
	err := c.Create(context.Background(), orbctl.CreateOptions{Image: "foo", Name: "x1"})
	if !errors.Is(err, orbctl.ErrBadArgument) || err.Error() != "Error: invalid distro: foo" {
		t.Fatalf("got %q", err)
	}
}

func TestStopRefusesAnEmptyNameAndNeverRunsOrbctl(t *testing.T) {
	c, argv := fakeClient(t)
	for _, name := range []string{"", "-a", "--all"} {
		if err := c.Stop(context.Background(), name); !errors.Is(err, orbctl.ErrBadArgument) {
			t.Fatalf("Stop(%q) = %v", name, err)
		}
	}
	if got := argv(); len(got) != 1 || got[0] != "" {
		t.Fatalf("orbctl was run: %q", got)
	}
}

func TestDeleteByIDDeletesByName(t *testing.T) {
	c, argv := fakeClient(t)
	orbctltest.AddMachine(t, "web", "running")
	m, err := c.Info(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	// orbctl crashes on `delete <ULID>`; the driver resolves the name first.
	if err := c.Delete(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	log := argv()
	if last := log[len(log)-1]; last != "delete -f web" {
		t.Fatalf("last orbctl call %q, want %q", last, "delete -f web")
	}
	if _, err := c.Info(context.Background(), "web"); !errors.Is(err, orbctl.ErrMachineNotFound) {
		t.Fatalf("machine still there: %v", err)
	}
}

func TestRunArgsNeverHaveADoubleDashAndRejectFlagLikeValues(t *testing.T) {
	args, err := orbctl.RunArgs(orbctl.RunSpec{Machine: "web", User: "root", Argv: []string{"sh", "-c", "echo -- --"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(args, "|"); got != "run|-m|web|-u|root|-w||sh|-c|echo -- --" {
		t.Fatalf("argv %q", got)
	}
	for _, spec := range []orbctl.RunSpec{
		{Machine: "", Argv: []string{"true"}},
		{Machine: "-x", Argv: []string{"true"}},
		{Machine: "web", User: "-u", Argv: []string{"true"}},
		{Machine: "web", Argv: []string{"--", "true"}},
		{Machine: "web"},
	} {
		if _, err := orbctl.RunArgs(spec); !errors.Is(err, orbctl.ErrBadArgument) {
			t.Fatalf("RunArgs(%+v) = %v, want ErrBadArgument", spec, err)
		}
	}
}

func TestRunOnAMissingMachineIsNotAnExitStatus(t *testing.T) {
	c, _ := fakeClient(t)
	orbctltest.AddMachine(t, "web", "running")
	_, err := c.Run(context.Background(), orbctl.RunSpec{Machine: "ghost", Argv: []string{"true"}})
	if !errors.Is(err, orbctl.ErrMachineNotFound) {
		t.Fatalf("got %v", err)
	}
	// A command that exits 1 in silence on a machine that exists is just that.
	code, err := c.Run(context.Background(), orbctl.RunSpec{Machine: "web", Argv: []string{"false"}})
	if err != nil || code != 1 {
		t.Fatalf("got %d, %v", code, err)
	}
}

func TestRunOfAnOrbctlKilledBySignalReportsTheShellsStatus(t *testing.T) {
	c, _ := fakeClient(t)
	orbctltest.AddMachine(t, "web", "running")
	// The fake execs the command, so killing it kills "orbctl" itself.
	code, err := c.Run(context.Background(), orbctl.RunSpec{Machine: "web", Argv: []string{"sh", "-c", "kill -KILL $$"}})
	if err != nil || code != 137 {
		t.Fatalf("got %d, %v; want 137", code, err)
	}
}
