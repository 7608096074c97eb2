package command

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// run runs the CLI in-process and returns its exit status and output.
func run(t *testing.T, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, args, stdin, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// withFakeOrbctl points the CLI at the fake orbctl with the given machines.
func withFakeOrbctl(t *testing.T, machines map[string]string) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Fake(t))
	for name, state := range machines {
		orbctltest.AddMachine(t, name, state)
	}
}

// withMachines points the CLI at the simulator with these machines, or at the
// fake where the simulator cannot run.
func withMachines(t *testing.T, machines map[string]string) {
	path, _ := orbctltest.WithMachines(t, machines)
	t.Setenv(orbctl.EnvOverride, path)
}

func withoutOrbctl(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, "")
	t.Setenv("PATH", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	if _, err := os.Stat("/usr/local/bin/orbctl"); err == nil {
		t.Skip("this machine has /usr/local/bin/orbctl")
	}
}

func TestVersionNamesTheProtocol(t *testing.T) {
	code, out, _ := run(t, nil, "version")
	if code != 0 || out != fmt.Sprintf("pyinfra-orbstack 0.0.0-dev (protocol %d)\n", rpc.ProtocolVersion) {
		t.Fatalf("exit %d, output %q", code, out)
	}
}

func TestListPrintsATable(t *testing.T) {
	withMachines(t, map[string]string{"web": "running", "db": "stopped"})
	code, out, errOut := run(t, nil, "list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.HasPrefix(lines[1], "db ") || !strings.Contains(lines[1], "stopped") ||
		!strings.HasPrefix(lines[2], "web ") || !strings.Contains(lines[2], "running") {
		t.Fatalf("table:\n%s", out)
	}
}

func TestListJSONIsTheProtocolsMachines(t *testing.T) {
	withMachines(t, map[string]string{"web": "running"})
	code, out, _ := run(t, nil, "list", "--json")
	var machines []orbctl.Machine
	if code != 0 || json.Unmarshal([]byte(out), &machines) != nil || len(machines) != 1 || machines[0].Name != "web" {
		t.Fatalf("exit %d, output %q", code, out)
	}
	if !strings.Contains(out, `"default_user": "tester"`) {
		t.Fatalf("not the protocol's field names: %s", out)
	}
}

func TestListWithoutMachinesSaysHowToCreateOne(t *testing.T) {
	withMachines(t, nil)
	code, out, errOut := run(t, nil, "list")
	if code != 0 || out != "" || !strings.Contains(errOut, "machine create") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = run(t, nil, "list", "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("exit %d, --json output %q", code, out)
	}
}

func TestListWithoutOrbctlSaysWhatToDo(t *testing.T) {
	withoutOrbctl(t)
	code, out, errOut := run(t, nil, "list")
	if code != ExitOrbctlNotFound || out != "" || !strings.Contains(errOut, "install OrbStack") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestDoctorReportsEachCheck(t *testing.T) {
	withFakeOrbctl(t, map[string]string{"web": "running", "db": "stopped"})
	code, out, _ := run(t, nil, "doctor")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"ok   orbctl", "from " + orbctl.EnvOverride, "ok   OrbStack  Running", "ok   version   2.2.3", "ok   machines  2 (1 running)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "simulator") {
		t.Fatalf("the fake is not the simulator:\n%s", out)
	}
}

func TestDoctorFailsWithoutOrbctl(t *testing.T) {
	withoutOrbctl(t)
	code, out, _ := run(t, nil, "doctor")
	if code != 1 || !strings.HasPrefix(out, "FAIL orbctl") || !strings.Contains(out, "looked in") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestServeSpeaksOnlyProtocolOnStdout(t *testing.T) {
	withMachines(t, map[string]string{"web": "running"})
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocol_version":%d}}`, rpc.ProtocolVersion)
	body2 := `{"jsonrpc":"2.0","id":2,"method":"command.run","params":{"machine":"web","command":"echo hi"}}`
	in := fmt.Sprintf("Content-Length: %d\r\n\r\n%sContent-Length: %d\r\n\r\n%s", len(body), body, len(body2), body2)
	// stdin stays open until the replies are read: EOF would cancel the
	// in-flight command.
	pr, pw := io.Pipe()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int)
	go func() { done <- Main(context.Background(), []string{"serve"}, pr, outW, &stderr); outW.Close() }()
	go pw.Write([]byte(in))
	r := bufio.NewReader(outR)
	var got []string
	for len(got) < 3 {
		msg, err := readMessage(r)
		if err != nil {
			t.Fatalf("after %q: %v (stderr %s)", got, err, stderr.String())
		}
		got = append(got, msg)
	}
	pw.Close()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d after stdin closed: %s", code, stderr.String())
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Fatalf("stray output on stdout: %q", rest)
	}
	if !strings.Contains(got[0], fmt.Sprintf(`"protocol_version":%d`, rpc.ProtocolVersion)) || !strings.Contains(got[1], `"text":"hi\n"`) || !strings.Contains(got[2], `"exit_code":0`) {
		t.Fatalf("messages %q", got)
	}
}

func readMessage(r *bufio.Reader) (string, error) {
	var n int
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == "\r\n" {
			break
		}
		if _, err := fmt.Sscanf(line, "Content-Length: %d\r\n", &n); err != nil {
			return "", fmt.Errorf("unexpected header %q", line)
		}
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return string(b), err
}

func TestEveryCommandHasHelpThatReads(t *testing.T) {
	root := NewCmdRoot(&Factory{Getenv: os.Getenv})
	for _, c := range allCommands(root) {
		if c.Short == "" || strings.HasSuffix(c.Short, ".") {
			t.Errorf("%q: Short %q should be a phrase without a final period", c.CommandPath(), c.Short)
		}
		if c.Runnable() && len(c.Long) < 40 {
			t.Errorf("%q: Long help is missing or too short", c.CommandPath())
		}
	}
}

func TestDoctorOnTheSimulator(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	code, out, _ := run(t, nil, "doctor")
	if code != 0 || !strings.Contains(out, "2.2.3 (the orbctl simulator, not OrbStack)") || !strings.Contains(out, "machines  0 (0 running)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	t.Setenv("ORBSIM_ORBSTACK", "stopped")
	code, out, _ = run(t, nil, "doctor")
	if code != 0 || !strings.Contains(out, "warn OrbStack  Stopped: orbctl starts it on first use") {
		t.Fatalf("stopped OrbStack: exit %d:\n%s", code, out)
	}
	t.Setenv("ORBSIM_ORBSTACK", "broken")
	code, out, _ = run(t, nil, "doctor")
	if code != 1 || !strings.Contains(out, "FAIL machines") || !strings.Contains(out, "failed to start OrbStack") {
		t.Fatalf("OrbStack that cannot start: exit %d:\n%s", code, out)
	}
}
