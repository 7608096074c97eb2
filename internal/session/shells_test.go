package session

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// The agent must work with any POSIX sh a machine may have as /bin/sh. The
// simulator's machines have dash; here the fake orbctl runs the agent on this
// host with `sh` (and, for busybox, head, setsid, mktemp and cat) taken from
// another implementation first on PATH.
func TestTheAgentRunsUnderOtherShells(t *testing.T) {
	shells := map[string][]string{ // name → how to run the shell
		"bash-posix":  {"bash", "--posix"}, // /bin/sh on Fedora
		"busybox-ash": {"busybox", "sh"},   // /bin/sh on Alpine
	}
	for name, shell := range shells {
		t.Run(name, func(t *testing.T) {
			if _, err := exec.LookPath(shell[0]); err != nil {
				t.Skipf("%s is not installed", shell[0])
			}
			bin := t.TempDir()
			wrap := func(tool string, argv ...string) {
				script := "#!/bin/sh\nexec " + strings.Join(argv, " ") + ` "$@"` + "\n"
				if err := os.WriteFile(filepath.Join(bin, tool), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			wrap("sh", shell...)
			if shell[0] == "busybox" {
				for _, tool := range []string{"head", "dd", "setsid", "mktemp", "mkfifo", "cat", "tr"} {
					wrap(tool, "busybox", tool)
				}
			}
			t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
			t.Setenv("HOME", t.TempDir())
			c := orbctl.New(orbctltest.Fake(t))
			c.KillDelay = 500 * time.Millisecond
			orbctltest.AddMachine(t, "web", "running")
			p := newPool(t)

			for _, req := range []Request{
				{Command: "printf 'a\\nno newline'; printf 'e\\n\\n' >&2; exit 5"},
				{Command: "printf ''"},
				{Command: "cat; echo", Stdin: []byte("in\nput")},
				{Command: "cksum", Stdin: bytes.Repeat([]byte("0123456789\n"), 5000)},
				{Command: `printf '%s|%s' "$K" "$(pwd)"`, Env: []string{"K=v w"}, Workdir: "/"},
				{Command: "cd /; echo $0"},
				{Command: "pwd"},
			} {
				got, want := run(p, c, "web", req), perCall(c, "web", req)
				if got.err != nil || got.stdout != want.stdout || got.stderr != want.stderr || got.code != want.code {
					t.Errorf("%q: session %+v, per-call %+v", req.Command, got, want)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			mark := filepath.Join(t.TempDir(), "survived")
			start := time.Now()
			_ = start
			var out, errOut strings.Builder
			if code, err := p.Run(ctx, c, Key{Machine: "web"}, Request{Command: "sleep 1; touch " + quote(mark), Stdout: &out, Stderr: &errOut}); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v %d %q %q after %s", err, code, out.String(), errOut.String(), time.Since(start))
			}
			if took := time.Since(start); took > 1500*time.Millisecond {
				t.Fatalf("cancelling took %s", took)
			}
			time.Sleep(1200 * time.Millisecond)
			if _, err := os.Stat(mark); err == nil {
				t.Fatal("the cancelled command kept running")
			}
			if r := run(p, c, "web", Request{Command: "echo again"}); r.err != nil || r.stdout != "again\n" {
				t.Fatalf("after a cancel: %+v", r)
			}
		})
	}
}
