package command

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

func fakeLog(t *testing.T) func() string {
	path := filepath.Join(t.TempDir(), "argv.log")
	t.Setenv("FAKE_ORBCTL_LOG", path)
	return func() string { b, _ := os.ReadFile(path); return string(b) }
}

func TestMachineCreateWaitsUntilTheMachineAnswers(t *testing.T) {
	withFakeOrbctl(t, nil)
	log := fakeLog(t)
	code, out, errOut := run(t, nil, "machine", "create", "--arch", "amd64", "--user", "deploy", "debian:bookworm", "web")
	if code != 0 || out != "created web\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if want := "create -a amd64 -u deploy debian:bookworm web\nrun -m web -w  true\n"; log() != want {
		t.Fatalf("orbctl calls %q, want %q", log(), want)
	}
}

func TestMachineCreateOfAnExistingNameFails(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "running"})
	code, _, errOut := run(t, nil, "machine", "create", "debian", "web")
	if code != ExitMachineExists || !strings.Contains(errOut, "machine already exists: 'web'") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestMachineStartReportsAMachineThatNeverAnswers(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "stopped"})
	t.Setenv("FAKE_ORBCTL_RUN_FAIL", "ssh: connect: connection refused")
	code, _, errOut := run(t, nil, "machine", "start", "--timeout", "1s", "web")
	if code != ExitNotReady || !strings.Contains(errOut, "did not answer") || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestMachineStartTimeoutCoversAStartThatHangs(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "stopped"})
	t.Setenv("FAKE_ORBCTL_SLOW_START", "5")
	start := time.Now()
	code, _, errOut := run(t, nil, "machine", "start", "--timeout", "500ms", "web")
	if code != ExitNotReady || !strings.Contains(errOut, "did not start within 500ms") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("a 500ms timeout took %s", took)
	}
}

func TestMachineStartAndStop(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "stopped"})
	if code, out, errOut := run(t, nil, "machine", "start", "web"); code != 0 || out != "web is running\n" {
		t.Fatalf("start: exit %d, %q %q", code, out, errOut)
	}
	if code, out, errOut := run(t, nil, "machine", "stop", "web"); code != 0 || out != "web is stopped\n" {
		t.Fatalf("stop: exit %d, %q %q", code, out, errOut)
	}
	_, out, _ := run(t, nil, "list")
	if !strings.Contains(out, "stopped") {
		t.Fatalf("list after stop:\n%s", out)
	}
}

func TestMachineStopNeedsExactlyOneName(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "running"})
	log := fakeLog(t)
	for _, a := range [][]string{{"machine", "stop"}, {"machine", "stop", ""}, {"machine", "stop", "--all"}} {
		code, _, errOut := run(t, nil, a...)
		if code != ExitUsage {
			t.Fatalf("%q: exit %d, stderr %q", a, code, errOut)
		}
	}
	if log() != "" {
		t.Fatalf("orbctl was called: %q", log())
	}
}

func TestMachineStopOfATypoIsAnError(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "running"})
	code, _, errOut := run(t, nil, "machine", "stop", "wbe")
	if code != ExitMachineNotFound || !strings.Contains(errOut, "pyinfra-orbstack list") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestMachineDelete(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "running"})
	code, _, errOut := run(t, nil, "machine", "delete", "ghost")
	if code != ExitMachineNotFound {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	code, out, errOut := run(t, nil, "machine", "delete", "--missing-ok", "ghost", "web")
	if code != 0 || out != "ghost does not exist\ndeleted web\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestUsageErrorsPointAtHelp(t *testing.T) {
	code, _, errOut := run(t, nil, "machine", "create", "debian")
	if code != ExitUsage || !strings.Contains(errOut, "accepts 2 arg(s)") || !strings.Contains(errOut, "pyinfra-orbstack machine create --help") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	code, _, _ = run(t, nil, "list", "--bogus")
	if code != ExitUsage {
		t.Fatalf("unknown flag: exit %d", code)
	}
}

// TestMachineLifecycleOnTheSimulator drives every machine subcommand against
// the simulator's real machines, the way a CI script would.
func TestMachineLifecycleOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	archive := filepath.Join(t.TempDir(), "web.tar.zst")
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"machine", "create", "--user", "deploy", "debian:bookworm", "web"}, "created web\n"},
		{[]string{"machine", "stop", "web"}, "web is stopped\n"},
		{[]string{"machine", "start", "web"}, "web is running\n"},
		{[]string{"machine", "restart", "web"}, "web is running\n"},
		{[]string{"machine", "clone", "--start", "web", "web-copy"}, "cloned web to web-copy\n"},
		{[]string{"machine", "rename", "web-copy", "web2"}, "renamed web-copy to web2\n"},
		{[]string{"machine", "export", "web2", archive}, "exported web2 to " + archive + "\n"},
		{[]string{"machine", "import", "--name", "web3", archive}, "imported " + archive + "\n"},
		{[]string{"machine", "delete", "web2", "web3"}, "deleted web2\ndeleted web3\n"},
	}
	for _, step := range steps {
		code, out, errOut := run(t, nil, step.args...)
		if code != 0 || out != step.want {
			t.Fatalf("%q: exit %d, stdout %q (want %q), stderr %q", step.args, code, out, step.want, errOut)
		}
	}
	code, out, _ := run(t, nil, "machine", "info", "--json", "web")
	var m orbctl.Machine
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m.State != "running" || m.DefaultUser != "deploy" {
		t.Fatalf("info: exit %d, %q", code, out)
	}
	code, out, _ = run(t, nil, "list")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "web ") {
		t.Fatalf("list at the end:\n%s", out)
	}
}

func TestConfigSetAndGetOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	if code, _, errOut := run(t, nil, "machine", "create", "debian", "cfg"); code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	if code, _, errOut := run(t, nil, "config", "set", "machine.cfg.memory_mib", "2048"); code != 0 {
		t.Fatalf("set: exit %d: %s", code, errOut)
	}
	if code, out, errOut := run(t, nil, "config", "get", "machine.cfg.memory_mib"); code != 0 || out != "2048\n" {
		t.Fatalf("get: exit %d, %q, %s", code, out, errOut)
	}
	if code, _, errOut := run(t, nil, "config", "get", "no.such.key"); code != ExitUsage || !strings.Contains(errOut, "no.such.key") {
		t.Fatalf("unknown key: exit %d, %s", code, errOut)
	}
}

// TestMachineCreateExistsOKOnTheSimulator: a CI line that runs every time
// succeeds on an existing machine, starts it when stopped, and keeps it.
func TestMachineCreateExistsOKOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	if code, _, errOut := run(t, nil, "machine", "create", "debian:bookworm", "ci"); code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	if code, _, errOut := run(t, nil, "machine", "stop", "ci"); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	code, out, errOut := run(t, nil, "machine", "create", "--exists-ok", "debian:bookworm", "ci")
	if code != 0 || !strings.HasPrefix(out, "ci already exists (debian:bookworm, ") || !strings.HasSuffix(out, ") and is running\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := run(t, nil, "machine", "create", "debian:bookworm", "ci"); code != ExitMachineExists {
		t.Fatalf("without --exists-ok: exit %d, stderr %q", code, errOut)
	}
	code, out, _ = run(t, nil, "machine", "info", "--json", "ci")
	var m orbctl.Machine
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m.State != "running" {
		t.Fatalf("info: exit %d, %q", code, out)
	}
}

func TestMachineCreateGivesANewMachineItsLimitsAndSetsAnExistingOnesThatDifferOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	// New: the limits go to orbctl create, no config set afterwards.
	code, out, errOut := run(t, nil, "machine", "create", "--cpus", "1", "--memory", "1.5G", "--disk", "8G", "debian", "lim")
	if code != 0 || out != "created lim\n" {
		t.Fatalf("exit %d, stdout %q (want only \"created lim\"), stderr %q", code, out, errOut)
	}
	for key, want := range map[string]string{"cpu": "1\n", "memory_mib": "1536\n", "disk_bytes": "8589934592\n"} {
		if code, got, _ := run(t, nil, "config", "get", "machine.lim."+key); code != 0 || got != want {
			t.Errorf("machine.lim.%s = %q, want %q", key, got, want)
		}
	}
	// Existing: only what differs is set.
	code, out, errOut = run(t, nil, "machine", "create", "--exists-ok", "--cpus", "2", "--memory", "1536M", "debian", "lim")
	if code != 0 || !strings.HasPrefix(out, "set machine.lim.cpu to 2\nmachine.lim.memory_mib is already 1536\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := run(t, nil, "config", "get", "machine.lim.cpu"); code != 0 || out != "2\n" {
		t.Fatalf("config get: exit %d, %q", code, out)
	}
}

// TestMachineCreateIsolatedWithMountsAndUserDataOnTheSimulator: the 2.x
// create flags reach orbctl and make the machine a user would expect.
func TestMachineCreateIsolatedWithMountsAndUserDataOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "user-data.sh"), []byte("#!/bin/sh\nhostname > /root/first-boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.txt"), []byte("source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir) // --user-data is relative to the current directory
	code, out, errOut := run(t, nil, "machine", "create", "--isolated", "--isolate-network", "--mount", dir+":/src",
		"--user-data", "user-data.sh", "debian", "sandbox")
	if code != 0 || out != "created sandbox\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = run(t, nil, "machine", "info", "--json", "sandbox")
	var m orbctl.Machine
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || !m.Isolated {
		t.Fatalf("info: exit %d, %q; want isolated", code, out)
	}
	inside, err := exec.Command(os.Getenv(orbctl.EnvOverride), "run", "-m", "sandbox", "-u", "root", "sh", "-c",
		"test -e /mnt/mac && echo /mnt/mac is there; cat /root/first-boot /src/app.txt").CombinedOutput()
	if err != nil || string(inside) != "sandbox\nsource\n" {
		t.Fatalf("inside: %q, %v; want the user data's output, the mounted file and no /mnt/mac", inside, err)
	}
	// Again with --exists-ok: nothing can change, and the note says so.
	code, out, errOut = run(t, nil, "machine", "create", "--exists-ok", "--isolated", "--user-data", "user-data.sh", "debian", "sandbox")
	if code != 0 || !strings.HasPrefix(out, "sandbox already exists") ||
		!strings.Contains(errOut, "note: --user-data, --isolated apply only when a machine is created; sandbox already exists") {
		t.Fatalf("exists-ok: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMachineCreateRefusesBadCreateFlagsBeforeOrbctlRuns(t *testing.T) {
	withFakeOrbctl(t, nil)
	log := fakeLog(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mount", "/tmp:/tmp"}, "mounts need an isolated machine"},
		{[]string{"--user-data", "/nonexistent/cloud-init.yml"}, "--user-data /nonexistent/cloud-init.yml: not a readable file"},
		{[]string{"--isolated", "--mount", "/tmp"}, `mount "/tmp" must be HOST:GUEST`},
		{[]string{"--isolated", "--mount", "-x:/y"}, `must not start with '-'`},
	} {
		code, _, errOut := run(t, nil, append(append([]string{"machine", "create"}, tc.args...), "debian", "web")...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want exit 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
	if strings.Contains(log(), "create") {
		t.Fatalf("orbctl create was called: %q", log())
	}
}

func TestMachineCreateRefusesABadSizeBeforeOrbctlRuns(t *testing.T) {
	withFakeOrbctl(t, nil)
	log := fakeLog(t)
	for _, a := range [][]string{{"--memory", "lots"}, {"--disk", "1X"}, {"--cpus", "-1"}} {
		code, _, errOut := run(t, nil, append(append([]string{"machine", "create"}, a...), "debian", "web")...)
		if code != ExitUsage || !strings.Contains(errOut, a[0]) {
			t.Fatalf("%q: exit %d, stderr %q", a, code, errOut)
		}
	}
	if log() != "" {
		t.Fatalf("orbctl was called: %q", log())
	}
}

func TestMachineExportAndImportCheckTheirFilesBeforeOrbctlRuns(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "running"})
	log := fakeLog(t)
	dir := t.TempDir()
	code, _, errOut := run(t, nil, "machine", "export", "web", filepath.Join(dir, "missing", "web.tar.zst"))
	if code != ExitUsage || !strings.Contains(errOut, "does not exist (create it first)") {
		t.Fatalf("export: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = run(t, nil, "machine", "import", "--name", "web2", filepath.Join(dir, "none.tar.zst"))
	if code != ExitUsage || !strings.Contains(errOut, "not a readable file") {
		t.Fatalf("import: exit %d, stderr %q", code, errOut)
	}
	if log() != "" {
		t.Fatalf("orbctl was called: %q", log())
	}
}

func TestMachineImportStartWaitsUntilItAnswersOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	archive := filepath.Join(t.TempDir(), "src.tar.zst")
	for _, a := range [][]string{{"machine", "create", "debian", "src"}, {"machine", "export", "src", archive}} {
		if code, _, errOut := run(t, nil, a...); code != 0 {
			t.Fatalf("%q: exit %d: %s", a, code, errOut)
		}
	}
	if code, _, errOut := run(t, nil, "machine", "import", "--start", archive); code != ExitUsage || !strings.Contains(errOut, "--start needs --name") {
		t.Fatalf("--start without --name: exit %d, %q", code, errOut)
	}
	code, out, errOut := run(t, nil, "machine", "import", "--name", "back", "--start", archive)
	if code != 0 || out != "imported "+archive+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = run(t, nil, "machine", "info", "--json", "back")
	var m orbctl.Machine
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m.State != "running" {
		t.Fatalf("info: exit %d, %q", code, out)
	}
}

func TestConfigSetSaysWhetherItChangedAndWhenOrbStackMustRestart(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	code, out, errOut := run(t, nil, "config", "set", "cpu", "3")
	if code != 0 || out != "set cpu to 3\n" || !strings.Contains(errOut, "OrbStack must restart to apply cpu") {
		t.Fatalf("first set: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = run(t, nil, "config", "set", "cpu", "3")
	if code != 0 || out != "cpu is already 3\n" || errOut != "" {
		t.Fatalf("second set: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = run(t, nil, "config", "set", "docker.node_name", "ci")
	if code != 0 || out != "set docker.node_name to ci\n" || errOut != "" {
		t.Fatalf("a live key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := run(t, nil, "config", "set", "machine.ghost.cpu", "1"); code != ExitMachineNotFound {
		t.Fatalf("missing machine: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "config", "set", "no.such.key", "1"); code != ExitUsage {
		t.Fatalf("unknown key: exit %d, %q", code, errOut)
	}
}

// TestConfigGetOnOlderOrbStacks: 1.11.3's config get printed every setting,
// and older versions had none; scripts still get one value or a clear error.
func TestConfigGetOnOlderOrbStacksOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	if code, _, errOut := run(t, nil, "config", "set", "cpu", "3"); code != 0 {
		t.Fatalf("set: exit %d: %s", code, errOut)
	}
	t.Setenv("ORBSIM_VERSION", "1.11.3")
	if code, out, errOut := run(t, nil, "config", "get", "cpu"); code != 0 || out != "3\n" {
		t.Fatalf("1.11.3 get: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := run(t, nil, "config", "set", "cpu", "3"); code != 0 || out != "cpu is already 3\n" {
		t.Fatalf("1.11.3 set: exit %d, stdout %q", code, out)
	}
	if code, _, errOut := run(t, nil, "config", "get", "no.such.key"); code != ExitUsage || !strings.Contains(errOut, "no.such.key") {
		t.Fatalf("1.11.3 unknown key: exit %d, %q", code, errOut)
	}
	t.Setenv("ORBSIM_VERSION", "1.10.0")
	if code, _, errOut := run(t, nil, "config", "get", "cpu"); code != ExitFailure || !strings.Contains(errOut, "orbctl config show") {
		t.Fatalf("1.10 get: exit %d, %q", code, errOut)
	}
	if code, out, errOut := run(t, nil, "config", "set", "cpu", "4"); code != 0 || out != "set cpu to 4\n" {
		t.Fatalf("1.10 set: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMachineCreateLimitsOnOrbStackBefore2_1AreRefusedBeforeCreatingOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	t.Setenv("ORBSIM_VERSION", "1.11.3")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cpus", "2"}, "--cpus needs OrbStack 2.1 or later; this Mac runs 1.11.3"},
		{[]string{"--isolated", "--memory", "1G"}, "--memory, --isolated need OrbStack 2.1 or later; this Mac runs 1.11.3"},
	} {
		code, _, errOut := run(t, nil, append(append([]string{"machine", "create"}, tc.args...), "debian", "old")...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Fatalf("%q: exit %d, stderr %q", tc.args, code, errOut)
		}
		if code, _, _ := run(t, nil, "machine", "info", "old"); code != ExitMachineNotFound {
			t.Fatalf("%q: the machine was created anyway (info exit %d)", tc.args, code)
		}
	}
	if code, out, errOut := run(t, nil, "machine", "create", "debian", "old"); code != 0 || out != "created old\n" {
		t.Fatalf("without limits: exit %d, %q, %q", code, out, errOut)
	}
}

func TestABadTimeoutIsRefusedBeforeOrbctlRuns(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "stopped"})
	log := fakeLog(t)
	for _, a := range [][]string{
		{"machine", "create", "--timeout", "0s", "debian", "new"},
		{"machine", "clone", "--start", "--timeout", "-1s", "web", "copy"},
		{"machine", "start", "--timeout", "0s", "web"},
	} {
		code, _, errOut := run(t, nil, a...)
		if code != ExitUsage || !strings.Contains(errOut, "--timeout must be positive") {
			t.Fatalf("%q: exit %d, stderr %q", a, code, errOut)
		}
	}
	if log() != "" {
		t.Fatalf("orbctl was called: %q", log())
	}
}

func TestEveryMachineAndConfigCommandShowsAnExample(t *testing.T) {
	f := &Factory{Getenv: os.Getenv}
	for _, parent := range []*cobra.Command{NewCmdMachine(f), NewCmdConfig(f)} {
		for _, c := range parent.Commands() {
			if !strings.Contains(c.Example, "pyinfra-orbstack "+parent.Name()+" "+c.Name()) {
				t.Errorf("%s %s: no example of itself in --help", parent.Name(), c.Name())
			}
		}
	}
}
