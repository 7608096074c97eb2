package rpc

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// A /proc file says it has 0 bytes: the reply must count what was sent.
func TestFilePutOfAFileThatDoesNotKnowItsSize(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	dir, _ := s.sh("web", "", "mktemp -d")
	var res FileResult
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": "/proc/self/status", "remote_path": dir + "/status"}, &res); e != nil {
		t.Fatal(e)
	}
	got, _ := s.sh("web", "", "wc -c < "+dir+"/status")
	if res.Size == 0 || strconv.FormatInt(res.Size, 10) != strings.TrimSpace(got) {
		t.Fatalf("reply size %d, %s bytes arrived", res.Size, got)
	}
}

// What a machine sees when the binary dies mid-put: fewer bytes than were
// announced, then end-of-file. The old destination must stay, with nothing
// beside it and no journal entry left.
func TestAPutCutShortKeepsTheDestination(t *testing.T) {
	run := simRunner(t)
	dir, _ := run("", "mktemp", "-d")
	dir = strings.TrimSpace(dir)
	dest := dir + "/conf"
	run("", "sh", "-c", "echo old > "+dest)
	out, code := run("0123456789", "sh", "-c", putScript, "pyinfra-orbstack-put", newNonce(), dest, "100")
	if code == 0 || !strings.Contains(out, "cut short (10 of 100 bytes arrived)") {
		t.Fatalf("a put cut short: exit %d, %q", code, out)
	}
	if got, _ := run("", "cat", dest); got != "old\n" {
		t.Fatalf("destination after a put cut short: %q", got)
	}
	if got, _ := run("", "sh", "-c", "ls -A "+dir+"; ls -A "+journalDir()); strings.TrimSpace(got) != "conf" {
		t.Fatalf("left beside the destination or in the journal: %q", got)
	}
	// The whole file, and the journal is empty again.
	if out, code := run("0123456789", "sh", "-c", putScript, "pyinfra-orbstack-put", newNonce(), dest, "10"); code != 0 {
		t.Fatalf("a whole put: exit %d, %q", code, out)
	}
	if got, _ := run("", "sh", "-c", "cat "+dest+"; ls -A "+journalDir()); got != "0123456789" {
		t.Fatalf("after a whole put: %q", got)
	}
}

// The same for an escalated put: its stage directory goes too.
func TestAnEscalatedPutCutShortKeepsTheDestination(t *testing.T) {
	run := simRunner(t)
	dir, _ := run("", "mktemp", "-d")
	dir = strings.TrimSpace(dir)
	dest, stage, nonce := dir+"/conf", dir+"/pyinfra-orbstack-0123456789abcdef", newNonce()
	run("", "sh", "-c", "echo old > "+dest)
	out, code := run("sudo -n sh -c 'sh "+stage+"/run'\n"+nonce+"\n0123456789", "sh", "-c", stagedPutScript,
		"pyinfra-orbstack-put-as", nonce, stage, dest, "100", installScript)
	if code == 0 || !strings.Contains(out, "cut short (10 of 100 bytes arrived)") {
		t.Fatalf("an escalated put cut short: exit %d, %q", code, out)
	}
	if got, _ := run("", "sh", "-c", "cat "+dest+"; ls -A "+dir+"; ls -A "+journalDir()); got != "old\nconf\n" {
		t.Fatalf("after an escalated put cut short: %q", got)
	}
}

// simRunner gives a test a simulator machine "web" and a function that runs
// argv there with stdin, returning its combined output and exit status; it
// skips where the simulator cannot run.
func simRunner(t *testing.T) func(stdin string, argv ...string) (string, int) {
	t.Helper()
	path, sim := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	if !sim {
		t.Skip("needs the simulator's machines")
	}
	c := orbctl.New(path)
	return func(stdin string, argv ...string) (string, int) {
		var out bytes.Buffer
		code, err := c.Run(context.Background(), orbctl.RunSpec{Machine: "web", Argv: argv, Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &out})
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), code
	}
}

func journalDir() string { return "/var/tmp/pyinfra-orbstack-$(id -u)" }

// A user that orbctl would read as a flag is refused naming the machine, not
// as if the user were the machine.
func TestABadUserIsNotReportedAsTheMachine(t *testing.T) {
	s := withMachines(t, map[string]string{"web": "running"})
	e := s.call(MethodCommandRun, map[string]any{"machine": "web", "user": "-r", "command": "true"}, nil)
	d := wantError(t, e, CodeBadArgument, "bad_argument")
	if d.Machine != "web" || !strings.Contains(e.Message, `user "-r"`) {
		t.Fatalf("got machine %q, message %q", d.Machine, e.Message)
	}
}

// A command's text never appears in an argv on the Mac side, on any path:
// sessions, sessions off, stdin too large for a session.
func TestNoCommandTextInTheMacsProcessList(t *testing.T) {
	for _, sessions := range []string{"1", "0"} {
		t.Run("sessions="+sessions, func(t *testing.T) {
			t.Setenv(EnvSessions, sessions)
			s := withMachines(t, map[string]string{"web": "running"})
			secret := "s3cret-" + newNonce()
			stop := make(chan struct{})
			seen := make(chan string, 1)
			go func() {
				for {
					select {
					case <-stop:
						close(seen)
						return
					default:
					}
					if line := hostArgvWith(secret); line != "" {
						seen <- line
						close(seen)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			for _, p := range []map[string]any{
				{"machine": "web", "command": "echo " + secret + "; sleep 0.5"},
				{"machine": "web", "command": "cat >/dev/null; echo " + secret + "; sleep 0.5", "stdin_b64": strings.Repeat("AAAA", 400<<10)},
				{"machine": "web", "command": "sleep 0.5", "env": map[string]string{"PYINFRA_SUDO_PASSWORD": secret}},
			} {
				if e := s.call(MethodCommandRun, p, nil); e != nil {
					t.Fatal(e)
				}
			}
			close(stop)
			if line := <-seen; line != "" {
				t.Fatalf("a command's text was in the process list of the host: %q", line)
			}
		})
	}
}

// hostArgvWith returns the argv of a process of this host (not of a simulated
// machine: those have their own PID namespace, and on a Mac they run in a VM)
// that contains s.
func hostArgvWith(s string) string {
	self, _ := os.Readlink("/proc/self/ns/pid")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err != nil || ns != self {
			continue
		}
		argv, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(argv, []byte(s)) {
			return string(bytes.ReplaceAll(argv, []byte{0}, []byte{' '}))
		}
	}
	return ""
}
