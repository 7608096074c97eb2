//go:build linux

package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reference §1, §2, §4, §5: output, error text, streams and exit codes of
// commands that need no machine.

func TestGrammarWithoutMachines(t *testing.T) {
	s := newSim(t)
	usage := func(use string) string { return "\nUsage:\n  orbctl " + use }
	cases := []struct {
		name       string
		env        []string
		args       []string
		stdout     string
		stderrHas  []string // substrings, in order of appearance
		stderrFull *string
		code       int
	}{
		{name: "version reports the newest documented 2.x and names the simulator", args: []string{"version"},
			stdout: "Version: 2.2.3 (2020300)\nCommit: 0000000000000000000000000000000000000000 (orbsim)\n"},
		{name: "version is configurable", env: []string{"ORBSIM_VERSION=1.11.3"}, args: []string{"version"},
			stdout: "Version: 1.11.3 (1110300)\nCommit: 0000000000000000000000000000000000000000 (orbsim)\n"},
		{name: "status Running exits 0", args: []string{"status"}, stdout: "Running\n"},
		{name: "status Stopped exits 1", env: []string{"ORBSIM_ORBSTACK=stopped"}, args: []string{"status"}, stdout: "Stopped\n", code: 1},
		{name: "status Starting exits 2", env: []string{"ORBSIM_ORBSTACK=starting"}, args: []string{"status"}, stdout: "Starting\n", code: 2},
		{name: "list -f json with no machines is []", args: []string{"list", "-f", "json"}, stdout: "[]\n"},
		{name: "list -f json with no machines was null before 0.15", env: []string{"ORBSIM_VERSION=0.14.0"}, args: []string{"list", "-f", "json"}, stdout: "null\n"},
		{name: "list text with no machines hints on stderr (literal backslash-n)", args: []string{"list"}, stderrFull: ptr(`\nUse "orbctl" create to create a machine.` + "\n")},
		{name: "list with a bad format", args: []string{"list", "-f", "yaml"}, stderrHas: []string{"Error: invalid format: yaml", usage("list [flags]")}, code: 1},
		{name: "info needs exactly one argument", args: []string{"info"}, stderrHas: []string{"Error: accepts 1 arg(s), received 0", usage("info [ID/NAME] [flags]")}, code: 1},
		{name: "info of a missing machine", args: []string{"info", "nope"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "info alias i", args: []string{"i", "nope"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "create with an unknown distro", args: []string{"create", "foo"}, stderrHas: []string{"Error: invalid distro: foo", usage("create [flags] DISTRO[:VERSION] [MACHINE_NAME]")}, code: 1},
		{name: "create with a bad arch", args: []string{"create", "-a", "x", "debian"}, stderrHas: []string{"Error: invalid architecture: x", "Usage:"}, code: 1},
		{name: "create with an unknown version", args: []string{"create", "-a", "arm64", "ubuntu:bogus", "vm1"}, stderrFull: ptr("[-32098] create 'vm1': make rootfs: image not found: {ubuntu bogus arm64 default}\n"), code: 1},
		{name: "create with an invalid name", args: []string{"create", "debian", "a_b"}, stderrFull: ptr("[-32098] create 'a_b': invalid machine name 'a_b'\n"), code: 1},
		{name: "create with a one-character name", args: []string{"create", "debian", "a"}, stderrFull: ptr("[-32098] create 'a': invalid machine name 'a'\n"), code: 1},
		{name: "create with a reserved name", args: []string{"create", "debian", "docker"}, stderrFull: ptr("[-32098] create 'docker': invalid machine name 'docker'\n"), code: 1},
		{name: "create -c on a distro without cloud-init", args: []string{"create", "-c", "/dev/null", "arch"}, stderrFull: ptr("[-32098] create 'arch': cloud-init not supported for 'archlinux'\n"), code: 1},
		{name: "create takes at most two arguments", args: []string{"create", "debian", "x", "y"}, stderrHas: []string{"Error: accepts between 1 and 2 arg(s), received 3"}, code: 1},
		{name: "2.x create flags do not exist in 2.0", env: []string{"ORBSIM_VERSION=2.0.0"}, args: []string{"create", "--isolated", "debian"}, stderrHas: []string{"Error: unknown flag: --isolated"}, code: 1},
		{name: "delete with nothing to delete", args: []string{"delete"}, stderrHas: []string{"Error: no machines specified", usage("delete [flags] [ID/NAME]...")}, code: 1},
		{name: "delete of a missing machine", args: []string{"delete", "-f", "nope"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "restart with nothing to restart", args: []string{"restart"}, stderrHas: []string{"Error: no machines specified"}, code: 1},
		{name: "start with no args when OrbStack runs", args: []string{"start"}, stderrFull: ptr("OrbStack is already running. Docker engine is ready to use.\nUse --all to start all machines.\n")},
		{name: "start of a missing machine", args: []string{"start", "nope"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "stop NAME when OrbStack is stopped exits 0", env: []string{"ORBSIM_ORBSTACK=stopped"}, args: []string{"stop", "whatever"}, stderrFull: ptr("OrbStack is not running\n")},
		{name: "restart NAME when OrbStack is stopped exits 0", env: []string{"ORBSIM_ORBSTACK=stopped"}, args: []string{"restart", "whatever"}, stderrFull: ptr("OrbStack is not running\n")},
		{name: "other commands auto-start a stopped OrbStack", env: []string{"ORBSIM_ORBSTACK=stopped"}, args: []string{"list", "-f", "json"}, stdout: "[]\n"},
		{name: "a failing auto-start is an error", env: []string{"ORBSIM_ORBSTACK=broken"}, args: []string{"list"}, stderrHas: []string{"failed to start OrbStack"}, code: 1},
		{name: "run without any machine explains how to create one", args: []string{"run", "true"}, stderrHas: []string{"To create a Linux machine:\n    orb create ubuntu\nSee \"orb create --help\""}, code: 1},
		{name: "run -m of a missing machine is silent without a PTY", args: []string{"run", "-m", "nope", "true"}, code: 1},
		{name: "run with an unknown flag", args: []string{"run", "-x", "true"}, stderrHas: []string{"Error: unknown flag -x", "Usage:"}, code: 1},
		{name: "run with a missing flag value", args: []string{"run", "-m"}, stderrHas: []string{"Error: missing value for flag -m", "Usage:"}, code: 1},
		{name: "default with no machines", args: []string{"default"}, stderrFull: ptr("[-32098] no machines found\n"), code: 1},
		{name: "logs errors are printed yet exit 0", args: []string{"logs", "nope"}, stdout: "[-32098] machine not found: 'nope'\n"},
		{name: "clone needs two arguments", args: []string{"clone", "x"}, stderrHas: []string{"Error: accepts 2 arg(s), received 1"}, code: 1},
		{name: "clone of a missing machine", args: []string{"clone", "nope", "new"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "clone of the builtin docker machine", args: []string{"clone", "docker", "new"}, stderrFull: ptr("[-32098] cannot clone builtin machine\n"), code: 1},
		{name: "rename of the builtin docker machine", args: []string{"rename", "docker", "new"}, stderrFull: ptr("[-32098] cannot rename builtin machine\n"), code: 1},
		{name: "create with a name longer than a hostname can be (64)", args: []string{"create", "debian", strings.Repeat("n", 65)},
			stderrFull: ptr("[-32098] create '" + strings.Repeat("n", 65) + "': invalid machine name '" + strings.Repeat("n", 65) + "' (65 characters; at most 64, the Linux hostname limit)\n"), code: 1},
		{name: "rename of a missing machine", args: []string{"rename", "nope", "new"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "ssh takes no arguments", args: []string{"ssh", "x"}, stderrHas: []string{`Error: unknown command "x" for "orbctl ssh"`}, code: 1},
		{name: "config set of an unknown key", args: []string{"config", "set", "nope", "1"}, stderrFull: ptr("Unknown configuration key: nope\n"), code: 1},
		{name: "config get of an unknown key", args: []string{"config", "get", "nope"}, stderrFull: ptr("Unknown configuration key: nope\n"), code: 1},
		{name: "config get of a missing machine's key", args: []string{"config", "get", "machine.nope.username"}, stderrFull: ptr("[-32098] machine not found: 'nope'\n"), code: 1},
		{name: "config set of a key that needs a restart", args: []string{"config", "set", "memory_mib", "4096"}, stdout: "Restart OrbStack with \"orbctl stop\" to apply changes.\n"},
		{name: "config get does not exist before 1.11.3", env: []string{"ORBSIM_VERSION=1.11.2"}, args: []string{"config", "get", "cpu"}, stderrHas: []string{"Error: unknown command \"get\""}, code: 1},
		{name: "update --check", args: []string{"update", "--check"}, stdout: "OrbStack is up to date.\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.with(c.env...).orbctl(c.args...)
			assert.Equal(t, c.code, r.Code, "exit code; stderr=%q", r.Stderr)
			assert.Equal(t, c.stdout, r.Stdout, "stdout")
			if c.stderrFull != nil {
				assert.Equal(t, *c.stderrFull, r.Stderr, "stderr")
			}
			rest := r.Stderr
			for _, want := range c.stderrHas {
				i := strings.Index(rest, want)
				if assert.GreaterOrEqual(t, i, 0, "stderr %q lacks %q", r.Stderr, want) {
					rest = rest[i+len(want):]
				}
			}
			if c.stderrFull == nil && len(c.stderrHas) == 0 {
				assert.Empty(t, r.Stderr, "stderr")
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestConfig(t *testing.T) {
	s := newSim(t)
	t.Run("get prints the bare value in 2.x", func(t *testing.T) {
		s.ok("config", "set", "k8s.enable", "true")
		assert.Equal(t, "true\n", s.ok("config", "get", "k8s.enable"))
	})
	t.Run("show prints sorted key: value lines", func(t *testing.T) {
		out := s.ok("config", "show")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		assert.Contains(t, lines, "k8s.enable: true")
		assert.Contains(t, lines, "memory_mib: 8192")
		assert.IsIncreasing(t, lines)
	})
	t.Run("1.11.3 config get ignores its key and prints everything", func(t *testing.T) {
		old := s.with("ORBSIM_VERSION=1.11.3")
		assert.Equal(t, old.ok("config", "show"), old.ok("config", "get", "cpu"))
	})
	t.Run("machine keys, quoted when the name has dots", func(t *testing.T) {
		s.machine("x.y", "-u", "alice")
		assert.Equal(t, "alice\n", s.ok("config", "get", `machine."x.y".username`))
		assert.Contains(t, s.ok("config", "show"), `machine."x.y".username: alice`)
		s.ok("config", "set", `machine."x.y".cpu`, "2")
		assert.Equal(t, "2\n", s.ok("config", "get", `machine."x.y".cpu`))
	})
	t.Run("forward_ssh_agent defaults to on for a normal machine and keeps what is set", func(t *testing.T) {
		s.machine("fwd")
		assert.Equal(t, "true\n", s.ok("config", "get", "machine.fwd.forward_ssh_agent"))
		s.ok("config", "set", "machine.fwd.forward_ssh_agent", "false")
		assert.Equal(t, "false\n", s.ok("config", "get", "machine.fwd.forward_ssh_agent"))
		assert.Contains(t, s.ok("info", "fwd", "-f", "json"), `"forward_ssh_agent": false`)
	})
}

func TestSSHHelp(t *testing.T) {
	s := newSim(t)
	out := s.ok("ssh")
	assert.True(t, strings.HasPrefix(out, "SSH command:\n    ssh orb\n"))
	assert.Contains(t, out, "    Port: 32222\n")
	assert.Contains(t, out, "ssh -p 32222 -i ~/.orbstack/ssh/id_ed25519 default@localhost")
}

func TestLatencyKnob(t *testing.T) {
	s := newSim(t).with("ORBSIM_LATENCY=300ms")
	start := time.Now()
	s.ok("version")
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	assert.Contains(t, s.with("ORBSIM_LATENCY=soon").orbctl("version").Stderr, "ORBSIM_LATENCY")
}

// Without the tools it enters machines with, the simulator refuses the same
// way, naming the packages to install.
func TestRefusesWithoutTools(t *testing.T) {
	s := newBareSim(t)
	cmd := s.command("orbctl", "run", "true")
	cmd.Env = append(cmd.Env, "PATH=/nonexistent")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "must fail")
	assert.Equal(t, 1, ee.ExitCode())
	want := "nsenter in PATH (package util-linux); ip in PATH (package iproute2)\n"
	if os.Geteuid() != 0 {
		want = "; " + want
	}
	assert.Contains(t, string(out), "orbsim: cannot run isolated machines, missing: ")
	assert.True(t, strings.HasSuffix(string(out), want), "%q", out)
}

// Without isolation, every command refuses at once and names what is
// missing; nothing ever runs on the host.
func TestRefusesWithoutIsolation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop to an unprivileged user")
	}
	s := newBareSim(t)
	for _, args := range [][]string{{"list"}, {"create", "debian", "vm1"}, {"run", "true"}, {"status"}} {
		cmd := s.command("orbctl", args...)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v must fail", args)
		assert.Equal(t, 1, ee.ExitCode())
		assert.Contains(t, string(out), "cannot run isolated machines, missing: root privileges (running as uid 65534)")
	}
}

// §2's aliases are the commands they stand for (exec/shell: TestRun; i:
// the table above).
func TestAliases(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	t.Run("add and new are create", func(t *testing.T) {
		s.ok("add", "debian", "al1")
		s.ok("new", "debian", "al2")
		assert.Equal(t, "al1\nal2\n", s.ok("list", "-q", "-r"))
	})
	t.Run("shutdown is stop", func(t *testing.T) {
		s.ok("shutdown", "al2")
		assert.Equal(t, "al1\n", s.ok("list", "-q", "-r"))
	})
	t.Run("set-default and get-default are default", func(t *testing.T) {
		s.ok("set-default", "al2")
		assert.Equal(t, "al2\n", s.ok("get-default"))
	})
	t.Run("log and console are logs", func(t *testing.T) {
		assert.Contains(t, s.ok("log", "al1"), "[orbsim] al1: started at ")
		assert.Equal(t, s.ok("logs", "al1"), s.ok("console", "al1"))
	})
}
