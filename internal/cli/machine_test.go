package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
