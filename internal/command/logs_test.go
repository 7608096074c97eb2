package command

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

type jsonLine struct {
	Time    *string `json:"time"`
	Machine string  `json:"machine"`
	Source  string  `json:"source"`
	Message string  `json:"message"`
}

func jsonLines(t *testing.T, out string) []jsonLine {
	t.Helper()
	var lines []jsonLine
	for _, text := range strings.Split(strings.TrimSpace(out), "\n") {
		if text == "" {
			continue
		}
		var l jsonLine
		if err := json.Unmarshal([]byte(text), &l); err != nil {
			t.Fatalf("not a JSON line: %q", text)
		}
		lines = append(lines, l)
	}
	return lines
}

// appendSyslog appends lines to /var/log/syslog inside machine, as a syslog daemon would.
func appendSyslog(t *testing.T, machine string, lines ...string) {
	t.Helper()
	script := `for l in "$@"; do printf '%s\n' "$l" >> /var/log/syslog; done`
	args := append([]string{"run", "-m", machine, "-u", "root", "sh", "-c", script, "append"}, lines...)
	if out, err := exec.Command(os.Getenv(orbctl.EnvOverride), args...).CombinedOutput(); err != nil {
		t.Fatalf("append to %s's syslog: %v: %s", machine, err, out)
	}
}

func TestLogsMergesMachinesInTimeOrderTaggedWithTheirMachine(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	mustOrbctl(t, "create", "debian", "web")
	mustOrbctl(t, "create", "debian", "db")
	appendSyslog(t, "web", "2026-01-02T10:00:01.000000+00:00 web nginx[1]: first", "2026-01-02T10:00:03.000000+00:00 web nginx[1]: third")
	appendSyslog(t, "db", "2026-01-02T10:00:02.000000+00:00 db postgres[2]: second", "Jan  2 10:00:04 db postgres[2]: fourth")
	code, out, errOut := run(t, nil, "logs", "--json", "--since", "2026-01-02")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got []string
	for _, l := range jsonLines(t, out) {
		got = append(got, l.Machine+" "+l.Source+" "+*l.Time+" "+l.Message)
	}
	want := []string{
		"web /var/log/syslog 2026-01-02T10:00:01Z web nginx[1]: first",
		"db /var/log/syslog 2026-01-02T10:00:02Z db postgres[2]: second",
		"web /var/log/syslog 2026-01-02T10:00:03Z web nginx[1]: third",
		"db /var/log/syslog 2026-01-02T10:00:04Z db postgres[2]: fourth",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without --since, OrbStack's own log of each machine comes too, untimed first.
	code, out, _ = run(t, nil, "logs", "web")
	if code != 0 || !strings.HasPrefix(out, "-                        web orbstack: ") || !strings.Contains(out, "web /var/log/syslog: web nginx[1]: third") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestLogsOfAStoppedMachineDoNotStartIt(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	mustOrbctl(t, "create", "debian", "asleep")
	mustOrbctl(t, "stop", "asleep")
	code, out, errOut := run(t, nil, "logs", "--json", "asleep")
	lines := jsonLines(t, out)
	if code != 0 || len(lines) == 0 || lines[len(lines)-1].Source != "orbstack" {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	c := orbctl.New(os.Getenv(orbctl.EnvOverride))
	if m, err := c.Info(context.Background(), "asleep"); err != nil || m.State != "stopped" {
		t.Fatalf("reading its logs started it: %+v %v", m, err)
	}
}

func TestLogsRefusesBadInputBeforeReadingAnything(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Fake(t))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"logs", "--since", "yesterday"}, ExitUsage, `--since "yesterday" is neither a duration`},
		{[]string{"logs", "--since", "-5m"}, ExitUsage, "a duration must be positive"},
		{[]string{"logs", "--follow", "--poll", "0s"}, ExitUsage, "--poll must be at least 100ms"},
		{[]string{"logs", "bad_name"}, ExitUsage, "invalid machine name \"bad_name\""},
		{[]string{"logs", "nosuch"}, ExitMachineNotFound, "no machine named nosuch"},
	} {
		code, out, errOut := run(t, nil, tc.args...)
		if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tc.args, code, out, errOut)
		}
	}
}

func TestLogsFollowSurvivesARestartAndStopsOnCtrlC(t *testing.T) {
	t.Setenv(orbctl.EnvOverride, orbctltest.Simulator(t))
	mustOrbctl(t, "create", "debian", "app")
	appendSyslog(t, "app", "an old line, before following")
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"logs", "--follow", "--json", "--poll", "200ms", "app"}, strings.NewReader(""), &stdout, &stderr)
	}()
	defer func() {
		cancel()
		<-done
	}()
	seen := func(msg string) int {
		n := 0
		for _, l := range jsonLines(t, stdout.String()) {
			if strings.HasSuffix(l.Message, msg) {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30s; stdout:\n%s\nstderr:\n%s", what, stdout.String(), stderr.String())
			}
		}
	}
	// Following starts at the end of the log: keep writing until a line shows up.
	for i := 0; seen("ping") == 0; i++ {
		if i == 100 {
			t.Fatalf("following never started:\n%s", stderr.String())
		}
		appendSyslog(t, "app", "ping")
		time.Sleep(100 * time.Millisecond)
	}
	// Every ping before this marker has been printed once it is.
	appendSyslog(t, "app", "marker")
	waitFor("the marker", func() bool { return seen("marker") == 1 })
	pings := seen("ping")
	mustOrbctl(t, "restart", "app")
	waitFor("OrbStack's log of the restart", func() bool { return strings.Contains(stdout.String(), `"source":"orbstack"`) })
	appendSyslog(t, "app", "after the restart")
	waitFor("the line written after the restart", func() bool { return seen("after the restart") == 1 })
	time.Sleep(500 * time.Millisecond)
	if seen("an old line, before following") != 0 || seen("ping") != pings || seen("marker") != 1 || seen("after the restart") != 1 {
		t.Fatalf("lines repeated or old lines shown after the restart:\n%s", stdout.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		done <- code
	case <-time.After(10 * time.Second):
		t.Fatal("--follow did not stop when cancelled (Ctrl-C)")
	}
}
