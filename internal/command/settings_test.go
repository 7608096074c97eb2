package command

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// The JSON outputs the pyinfra facts read, against the simulator.

func TestMachineSettingsPairsWantedAndCurrentValuesInOrbStacksUnits(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	if code, _, errOut := run(t, nil, "machine", "create", "--memory", "1G", "debian", "web"); code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	code, out, errOut := run(t, nil, "machine", "settings", "--memory", "2G", "--cpus", "1", "web")
	var got []SettingState
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	if len(got) != 2 || got[0].Key != "machine.web.cpu" || got[1].Key != "machine.web.memory_mib" ||
		got[1].Value != "2048" || got[1].Current == nil || *got[1].Current != "1024" {
		t.Fatalf("settings %s", out)
	}
	t.Setenv("ORBSIM_VERSION", "1.11.3")
	if code, _, errOut := run(t, nil, "machine", "settings", "--cpus", "1", "web"); code != ExitUsage ||
		!strings.Contains(errOut, "--cpus needs OrbStack 2.1 or later; this Mac runs 1.11.3") {
		t.Fatalf("before 2.1: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "machine", "settings", "--memory", "lots", "web"); code != ExitUsage ||
		!strings.Contains(errOut, `--memory: invalid size "lots"`) {
		t.Fatalf("bad size: exit %d, %q", code, errOut)
	}
}

func TestMachineDiffNamesWhatOnlyRecreatingChanges(t *testing.T) {
	withMachines(t, map[string]string{"web": "running"})
	code, out, errOut := run(t, nil, "machine", "diff", "--image", "ubuntu:24.04", "web")
	var got []string
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) == 0 || !strings.HasPrefix(got[0], "distro debian (want ubuntu)") {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	for _, args := range [][]string{{"--image", "debian"}, {"--image", "debian:12"}} {
		if code, out, _ := run(t, nil, append(append([]string{"machine", "diff"}, args...), "web")...); code != 0 || strings.TrimSpace(out) != "[]" {
			t.Fatalf("%q: exit %d, %q", args, code, out)
		}
	}
	if code, out, _ := run(t, nil, "machine", "diff", "--image", "debian", "nope"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("missing machine: exit %d, %q", code, out)
	}
}

func TestInfoMissingOKAndTheMachinesConfig(t *testing.T) {
	withMachines(t, map[string]string{"web": "running"})
	code, out, _ := run(t, nil, "machine", "info", "--json", "web")
	var m map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m["config"] == nil || m["distro"] != "debian" {
		t.Fatalf("info: exit %d, %q", code, out)
	}
	if code, out, _ := run(t, nil, "machine", "info", "--json", "--missing-ok", "nope"); code != 0 || strings.TrimSpace(out) != "null" {
		t.Fatalf("missing: exit %d, %q", code, out)
	}
	if code, _, errOut := run(t, nil, "machine", "info", "--json", "--missing-ok", "web_1"); code != ExitUsage ||
		!strings.Contains(errOut, "invalid machine name 'web_1'") {
		t.Fatalf("bad name: exit %d, %q", code, errOut)
	}
}

func TestConfigGetJSONOnEveryOrbStackVersion(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	for _, version := range []string{"1.9.0", "1.11.3", "2.2.3"} {
		t.Setenv("ORBSIM_VERSION", version)
		code, out, errOut := run(t, nil, "config", "get", "--json", "memory_mib", "no_such_key")
		var got map[string]ConfigValue
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
			t.Fatalf("%s: exit %d, %q, %q", version, code, out, errOut)
		}
		if v := got["memory_mib"]; v.Value == nil || *v.Value == "" || !v.Restart {
			t.Errorf("%s: memory_mib %+v", version, v)
		}
		if got["no_such_key"].Value != nil {
			t.Errorf("%s: an unknown key is null: %+v", version, got["no_such_key"])
		}
	}
}

func TestConfigSetMachineQuotesADottedName(t *testing.T) {
	withFakeOrbctl(t, nil)
	log := fakeLog(t)
	run(t, nil, "config", "set", "--machine", "a.b", "username", "deploy")
	if !strings.Contains(log(), `config set machine."a.b".username deploy`) {
		t.Fatalf("orbctl argv %q", log())
	}
}

func TestVersionJSONCarriesOrbStacksVersion(t *testing.T) {
	withMachines(t, nil)
	code, out, _ := run(t, nil, "version", "--json")
	var v VersionJSON
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Protocol != rpc.ProtocolVersion || v.OrbStack == nil || v.OrbStack.Code < 1000000 {
		t.Fatalf("exit %d, %q", code, out)
	}
}

func TestStatusSSHInfoAndLogsAnswerAsTheFactsNeed(t *testing.T) {
	withMachines(t, map[string]string{"web": "running"})
	if code, out, _ := run(t, nil, "status"); code != 0 || out != "Running\n" {
		t.Fatalf("status: exit %d, %q", code, out)
	}
	code, out, _ := run(t, nil, "ssh-info", "--machine", "web", "--user", "deploy")
	var ssh SSHJSON
	if code != 0 || json.Unmarshal([]byte(out), &ssh) != nil || ssh.User != "deploy@web" ||
		ssh.Command != "ssh -p 32222 -i ~/.orbstack/ssh/id_ed25519 deploy@web@localhost" {
		t.Fatalf("ssh-info: exit %d, %q", code, out)
	}
	if code, out, _ := run(t, nil, "machine", "logs", "--missing-ok", "nope"); code != 0 || out != "" {
		t.Fatalf("logs of a missing machine: exit %d, %q", code, out)
	}
	if code, _, _ := run(t, nil, "machine", "logs", "nope"); code != ExitMachineNotFound {
		t.Fatalf("logs without --missing-ok: exit %d", code)
	}
}

func TestStatusOfAStoppedOrbStackIsAnAnswer(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	t.Setenv("ORBSIM_ORBSTACK", "stopped")
	if code, out, errOut := run(t, nil, "status"); code != 0 || out != "Stopped\n" {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
}
