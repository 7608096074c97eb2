package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// simulator gives a test simulator machines (all running) and an orbctl
// client, or skips it where the simulator cannot run: sessions are about real
// machines (login shells, process groups, machines stopping under them).
func simulator(t *testing.T, machines ...string) *orbctl.Client {
	t.Helper()
	want := map[string]string{}
	for _, m := range machines {
		want[m] = "running"
	}
	path, sim := orbctltest.WithMachines(t, want)
	if !sim {
		t.Skip("command sessions are tested against the simulator's machines")
	}
	c := orbctl.New(path)
	c.KillDelay = 500 * time.Millisecond
	return c
}

func newPool(t *testing.T) *Pool {
	p := NewPool()
	p.Logf = t.Logf
	t.Cleanup(p.Close)
	return p
}

type result struct {
	stdout, stderr string
	code           int
	err            error
}

// run runs command in machine (default user) through the pool.
func run(p *Pool, c *orbctl.Client, machine string, req Request) result {
	var stdout, stderr bytes.Buffer
	req.Stdout, req.Stderr = &stdout, &stderr
	// Bounded, so that a hang fails the test instead of stalling the suite.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := p.Run(ctx, c, Key{Machine: machine}, req)
	return result{stdout.String(), stderr.String(), code, err}
}

// perCall runs command with its own `orbctl run`, as without sessions.
func perCall(c *orbctl.Client, machine string, req Request) result {
	var stdout, stderr bytes.Buffer
	argv := []string{"sh", "-c", req.Command}
	if len(req.Env) > 0 {
		argv = append(append([]string{"env"}, req.Env...), argv...)
	}
	spec := orbctl.RunSpec{Machine: machine, Workdir: req.Workdir, Argv: argv, Stdout: &stdout, Stderr: &stderr}
	if req.Stdin != nil {
		spec.Stdin = bytes.NewReader(req.Stdin)
	}
	code, err := c.Run(context.Background(), spec)
	return result{stdout.String(), stderr.String(), code, err}
}

func TestOutputBytesAndExitStatusAreThoseOfAPerCallRun(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	commands := []string{
		"true",
		"exit 7",
		"printf ''",
		"printf 'no newline'",
		"printf 'one\\n'",
		"printf '\\n'",
		"printf '\\n\\n'",
		"printf 'a\\n\\nb\\n\\n'",
		"printf 'out'; printf 'err' >&2; exit 3",
		"printf '\\001\\002\\377\\376 \\033[31mred\\033[0m\\r\\n\\tz'",
		// Lines shaped like the end markers, with a made-up nonce.
		"echo 'pyinfra-orbstack-00000000000000000000000000000000 out 0'; echo 'pyinfra-orbstack-00000000000000000000000000000000 err' >&2",
		"head -c 200000 /dev/zero | tr '\\0' x", // one line longer than the reader's buffer, no newline
		"head -c 65500 /dev/zero | tr '\\0' x",  // the end marker straddles the reader's 64 KiB buffer
		"head -c 65520 /dev/zero | tr '\\0' x",
		"seq 1 5000",
		"kill -TERM $$",
		"echo \"$0\" \"$#\"",
		// Scripts that travel as one line (agentScript, "Request"): what the
		// shell's read could bend (backslashes, edge blanks, tabs, a CR, an
		// empty command) must arrive as sent, at and past the line limit.
		`  printf '%s|\n' 'back\slash \\ \n' "tab	in" 'trailing  '  `,
		"printf 'cr\\n'\r",
		" ",
		lineOf(maxLineScript),
		lineOf(maxLineScript + 1),
		"printf 'two\n'\nprintf 'lines\n'",
		// pyinfra's own wrapper: its shell reports a child killed by a signal
		// ("Terminated"), so it must run as it is, not be unwrapped.
		`sh -c 'echo "$0" "$#" "$$" >/dev/null; echo "$0" "$#"; exit 3'`,
		`sh -c 'kill -TERM $$'`,
		`sh -c 'nosuchcommand-x; printf "%s\n" "$(pwd)"'`,
		`sh -c 'if'`,
	}
	for _, cmd := range commands {
		got := run(p, c, "web", Request{Command: cmd})
		want := perCall(c, "web", Request{Command: cmd})
		if got.err != nil || want.err != nil {
			t.Fatalf("%s: session error %v, per-call error %v", cmd, got.err, want.err)
		}
		if got.code != want.code {
			t.Errorf("%s: exit status %d, per-call %d", cmd, got.code, want.code)
		}
		if got.stdout != want.stdout {
			t.Errorf("%s: stdout %.200q, per-call %.200q", cmd, got.stdout, want.stdout)
		}
		if got.stderr != want.stderr {
			t.Errorf("%s: stderr %.200q, per-call %.200q", cmd, got.stderr, want.stderr)
		}
	}
}

// lineOf is a one-line script of exactly n bytes that prints its last 10.
func lineOf(n int) string {
	head := "echo "
	return head + strings.Repeat("x", n-len(head)-10) + "0123456789"
}

func TestStdinEnvAndWorkdir(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB, with no newline at the end
	cases := []Request{
		{Command: "cat", Stdin: []byte("from stdin\nno newline")},
		{Command: "cat; echo end", Stdin: []byte{}},
		{Command: "cat; echo end"}, // no stdin: /dev/null, not the agent's requests
		{Command: "wc -c; cksum", Stdin: big},
		{Command: "head -c 3", Stdin: []byte("abcdef")}, // stdin not read to the end
		{Command: `printf '%s|%s|%s' "$A" "$B" "$(pwd)"`, Env: []string{"A=it's $(x)", "B="}, Workdir: "/etc"},
		{Command: "pwd", Workdir: "/no/such/dir"},
		{Command: "pwd", Workdir: "/root/it's"},
	}
	for _, req := range cases {
		got, want := run(p, c, "web", req), perCall(c, "web", req)
		if got.err != nil || got.stdout != want.stdout || got.code != want.code {
			t.Errorf("%q (workdir %q): session %q %d %v, per-call %q %d", req.Command, req.Workdir, got.stdout, got.code, got.err, want.stdout, want.code)
		}
	}
}

func TestACommandCannotChangeTheNextOnesDirectoryOrVariables(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	if r := run(p, c, "web", Request{Command: "cd /tmp; export LEAK=1; umask 0077; echo $$"}); r.err != nil || r.code != 0 {
		t.Fatalf("first command: %+v", r)
	}
	got := run(p, c, "web", Request{Command: `echo "$(pwd)|${LEAK-unset}|$(umask)"`})
	want := perCall(c, "web", Request{Command: `echo "$(pwd)|${LEAK-unset}|$(umask)"`})
	if got.stdout != want.stdout || !strings.HasSuffix(got.stdout, "|unset|0022\n") {
		t.Fatalf("second command saw %q, a fresh orbctl run sees %q", got.stdout, want.stdout)
	}
}

// asRoot runs command as root with its own orbctl run.
func asRoot(c *orbctl.Client, machine, command string) result {
	var stdout, stderr bytes.Buffer
	code, err := c.Run(context.Background(), orbctl.RunSpec{Machine: machine, User: "root",
		Argv: []string{"sh", "-c", command}, Stdout: &stdout, Stderr: &stderr})
	return result{stdout.String(), stderr.String(), code, err}
}

// agents counts the session agents running in machine, and their private
// directories.
func agents(t *testing.T, c *orbctl.Client, machine string) (running, dirs int) {
	t.Helper()
	// [a] keeps the pattern from matching this command's own command line.
	r := asRoot(c, machine, "pgrep -f 'pyinfra-orbstack-[a]gent' | wc -l; ls -d /tmp/pyinfra-orbstack.* 2>/dev/null | wc -l")
	if _, err := fmt.Sscan(r.stdout, &running, &dirs); err != nil {
		t.Fatalf("counting agents: %q %v", r.stdout, r.err)
	}
	return running, dirs
}

func TestOneSessionServesSequentialCommandsAndCloseEndsIt(t *testing.T) {
	c := simulator(t, "web")
	var mu sync.Mutex
	var runs []string
	c.Trace = func(args []string, _ time.Duration, _ error) {
		mu.Lock()
		runs = append(runs, strings.Join(args, " "))
		mu.Unlock()
	}
	p := NewPool()
	p.Logf = t.Logf
	for i := 0; i < 5; i++ {
		if r := run(p, c, "web", Request{Command: "echo hi"}); r.stdout != "hi\n" {
			t.Fatalf("command %d: %+v", i, r)
		}
	}
	mu.Lock()
	if len(runs) != 1 {
		t.Fatalf("5 commands made %d orbctl calls, want 1 (the session): %q", len(runs), runs)
	}
	mu.Unlock()
	c.Trace = nil
	if n, dirs := agents(t, c, "web"); n != 1 || dirs != 1 {
		t.Fatalf("%d agents and %d private directories in the machine, want 1", n, dirs)
	}
	p.Close()
	if n, dirs := agents(t, c, "web"); n != 0 || dirs != 0 {
		t.Fatalf("%d agents and %d private directories left in the machine after Close", n, dirs)
	}
	if r := run(p, c, "web", Request{Command: "true"}); !errors.Is(r.err, ErrUnavailable) {
		t.Fatalf("a closed pool ran a command: %+v", r)
	}
}

func TestCancelKillsTheCommandInTheMachineAndDiscardsTheSession(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	dir := strings.TrimSpace(run(p, c, "web", Request{Command: "mktemp -d"}).stdout)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// A subshell and a background job: the whole process group must go.
	cmd := "(sleep 1; touch " + dir + "/sub) & sleep 1; touch " + dir + "/main"
	_, err := p.Run(ctx, c, Key{Machine: "web"}, Request{Command: cmd})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("cancelling took %s", took)
	}
	time.Sleep(1500 * time.Millisecond)
	if r := run(p, c, "web", Request{Command: "ls " + dir}); r.stdout != "" || r.code != 0 {
		t.Fatalf("the cancelled command kept running in the machine: %+v", r)
	}
	if n, dirs := agents(t, c, "web"); n != 1 || dirs != 1 {
		t.Fatalf("%d agents and %d private directories in the machine, want 1: the cancelled one must be gone", n, dirs)
	}
}

func TestSudoCommandIsKilledToo(t *testing.T) {
	c := simulator(t, "web")
	if r := perCall(c, "web", Request{Command: "command -v sudo"}); r.code != 0 {
		t.Skip("no sudo in the machine")
	}
	p := newPool(t)
	key := Key{Machine: "web", User: "tester"}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := p.Run(ctx, c, key, Request{Command: "sudo -n sh -c 'sleep 1; touch /root/survived'"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if r := asRoot(c, "web", "test -e /root/survived"); r.code == 0 {
		t.Fatal("the command run through sudo survived its cancellation")
	}
}

func TestAMachineStoppedBetweenCommandsGetsAFreshSession(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	if r := run(p, c, "web", Request{Command: "true"}); r.err != nil {
		t.Fatal(r.err)
	}
	start := time.Now()
	if out, err := exec.Command(c.Path, "stop", "web").CombinedOutput(); err != nil {
		t.Fatalf("orbctl stop with a session open: %v: %s", err, out)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("orbctl stop took %s with a session open", took)
	}
	// Like a per-call `orbctl run`, the next command starts the machine.
	if r := run(p, c, "web", Request{Command: "echo back"}); r.err != nil || r.stdout != "back\n" {
		t.Fatalf("after a stop: %+v", r)
	}
	if out, err := exec.Command(c.Path, "delete", "-f", "web").CombinedOutput(); err != nil {
		t.Fatalf("orbctl delete with a session open: %v: %s", err, out)
	}
	if r := run(p, c, "web", Request{Command: "true"}); !errors.Is(r.err, ErrUnavailable) {
		t.Fatalf("on a deleted machine: %+v, want ErrUnavailable (the per-call path reports it)", r)
	}
}

func TestASessionDyingMidCommandIsAnErrorAndNothingRunsTwice(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	dir := strings.TrimSpace(run(p, c, "web", Request{Command: "mktemp -d"}).stdout)
	done := make(chan result, 1)
	go func() {
		done <- run(p, c, "web", Request{Command: "echo ran >> " + dir + "/log; echo $PPID > " + dir + "/agent; sleep 3"})
	}()
	// Kill the agent (the command's parent) from outside, mid-command.
	kill := "while [ ! -s " + dir + "/agent ]; do sleep 0.05; done; kill -KILL $(cat " + dir + "/agent)"
	if r := asRoot(c, "web", kill); r.code != 0 {
		t.Fatalf("killing the agent: %+v", r)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a command whose session died did not return")
	}
	var oe *orbctl.Error
	if !errors.As(r.err, &oe) || !strings.Contains(oe.Error(), "was not run again") {
		t.Fatalf("got %+v, want an error saying the session ended", r)
	}
	if got := run(p, c, "web", Request{Command: "cat " + dir + "/log"}); got.err != nil || got.stdout != "ran\n" {
		t.Fatalf("next command: %+v (the log must say the command ran once)", got)
	}
}

func TestBackgroundProcessesDoNotHoldUpCommands(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	start := time.Now()
	for _, cmd := range []string{
		"nohup sleep 30 >/dev/null 2>&1 &",
		"sleep 30 &",               // keeps the session's stdout and stderr open
		"(sleep 0.3; echo late) &", // writes after its command ended
	} {
		if r := run(p, c, "web", Request{Command: cmd}); r.err != nil || r.code != 0 || r.stdout != "" {
			t.Fatalf("%s: %+v", cmd, r)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("commands leaving background processes took %s", took)
	}
	time.Sleep(500 * time.Millisecond)
	// Documented: output a background process writes after its command ended
	// reaches whichever command runs next in that session.
	if r := run(p, c, "web", Request{Command: "echo next"}); r.err != nil || r.stdout != "late\nnext\n" {
		t.Fatalf("next command: %+v", r)
	}
}

func TestConcurrentCommandsOverSeveralMachines(t *testing.T) {
	machines := []string{"m1", "m2", "m3"}
	c := simulator(t, machines...)
	p := newPool(t)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := machines[i%len(machines)]
			tag := fmt.Sprintf("cmd-%d", i)
			r := run(p, c, m, Request{Command: "for n in 1 2 3; do echo " + tag + "; echo " + tag + " >&2; sleep 0.05; done; hostname; exit " + fmt.Sprint(i)})
			want := strings.Repeat(tag+"\n", 3) + m + "\n"
			if r.err != nil || r.code != i || r.stdout != want || r.stderr != strings.Repeat(tag+"\n", 3) {
				t.Errorf("%s on %s: %+v", tag, m, r)
			}
		}()
	}
	wg.Wait()
	for _, m := range machines {
		if n, _ := agents(t, c, m); n > PerKey {
			t.Errorf("%d sessions in %s, more than %d", n, m, PerKey)
		}
	}
}

func TestAMachineWithoutTheAgentsToolsFallsBack(t *testing.T) {
	c := simulator(t, "web")
	if r := asRoot(c, "web", "rm \"$(command -v setsid)\""); r.code != 0 {
		t.Fatalf("removing setsid: %+v", r)
	}
	p := newPool(t)
	for i := 0; i < 2; i++ {
		r := run(p, c, "web", Request{Command: "true"})
		if !errors.Is(r.err, ErrUnavailable) || !Unsupported(r.err) || !strings.Contains(r.err.Error(), "setsid") {
			t.Fatalf("got %+v, want ErrUnavailable naming setsid", r)
		}
	}
	// One-shot, such a machine runs commands the bare way, byte for byte.
	for _, req := range []Request{
		{Command: "printf 'a\\nno newline'; printf 'e\\n' >&2; exit 5"},
		{Command: "cat; echo", Stdin: []byte("in\nput")},
		{Command: `printf '%s|%s' "$K" "$(pwd)"`, Env: []string{"K=v w"}, Workdir: "/"},
		{Command: "echo one\necho two\n\necho 'a  b\\c'"},
	} {
		got, want := runOnce(c, "web", req), perCall(c, "web", req)
		if got.err != nil || got.stdout != want.stdout || got.stderr != want.stderr || got.code != want.code {
			t.Errorf("%q: bare %+v, per-call %+v", req.Command, got, want)
		}
	}
}

func TestLargeStdinIsLeftToThePerCallPath(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	r := run(p, c, "web", Request{Command: "wc -c", Stdin: make([]byte, MaxStdin+1)})
	if !errors.Is(r.err, ErrUnavailable) {
		t.Fatalf("got %+v", r)
	}
}

func TestCommandsNoMachineCanRunAreRefusedSayingWhy(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	for _, cmd := range []string{"echo " + strings.Repeat("x", MaxScript), "echo a\x00b"} {
		for name, runIt := range map[string]func() result{
			"pool": func() result { return run(p, c, "web", Request{Command: cmd}) },
			"once": func() result { return runOnce(c, "web", Request{Command: cmd}) },
		} {
			r := runIt()
			var oe *orbctl.Error
			if !errors.Is(r.err, orbctl.ErrBadArgument) || !errors.As(r.err, &oe) || oe.Machine != "web" && name == "once" {
				t.Fatalf("%s %.20q: got %+v, want a bad-argument error", name, cmd, r)
			}
		}
	}
	// At the bound, it runs, in a session and one-shot alike.
	cmd := "echo " + strings.Repeat("x", MaxScript-5)
	if r := run(p, c, "web", Request{Command: cmd}); r.err != nil || len(r.stdout) != MaxScript-5+1 {
		t.Fatalf("a %d-byte command in a session: %v, %d bytes out", len(cmd), r.err, len(r.stdout))
	}
	if r := runOnce(c, "web", Request{Command: cmd}); r.err != nil || len(r.stdout) != MaxScript-5+1 {
		t.Fatalf("a %d-byte command one-shot: %v, %d bytes out", len(cmd), r.err, len(r.stdout))
	}
}

// runOnce runs command in machine (default user) through a one-shot agent.
func runOnce(c *orbctl.Client, machine string, req Request) result {
	var stdout, stderr bytes.Buffer
	req.Stdout, req.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := NewPool()
	defer p.Close() // waits for the agent to end
	code, err := p.RunOnce(ctx, c, Key{Machine: machine}, req)
	return result{stdout.String(), stderr.String(), code, err}
}

func TestRunOnceIsByteForByteAPerCallRun(t *testing.T) {
	c := simulator(t, "web")
	for _, req := range []Request{
		{Command: "printf 'a\\nno newline'; printf 'e\\n\\n' >&2; exit 5"},
		{Command: "cat; echo", Stdin: []byte("in\nput")},
		{Command: "wc -c", Stdin: make([]byte, 3*MaxStdin)}, // over what a pooled session takes
		{Command: `printf '%s|%s' "$K" "$(pwd)"`, Env: []string{"K=v w"}, Workdir: "/"},
		{Command: "pwd; echo $0"},
	} {
		got, want := runOnce(c, "web", req), perCall(c, "web", req)
		if got.err != nil || got.stdout != want.stdout || got.stderr != want.stderr || got.code != want.code {
			t.Errorf("%q: one-shot %+v, per-call %+v", req.Command, got, want)
		}
	}
	if n, dirs := agents(t, c, "web"); n != 0 || dirs != 0 {
		t.Fatalf("%d agents and %d private directories left after one-shot runs", n, dirs)
	}
}

func TestRunOnceReportsAMissingMachineOrUserAsThePerCallPathDid(t *testing.T) {
	c := simulator(t, "web")
	if r := runOnce(c, "nosuch", Request{Command: "true"}); !errors.Is(r.err, orbctl.ErrMachineNotFound) {
		t.Fatalf("missing machine: %+v", r)
	}
	var stdout bytes.Buffer
	_, err := newPool(t).RunOnce(context.Background(), c, Key{Machine: "web", User: "nosuchuser"}, Request{Command: "true", Stdout: &stdout})
	if !errors.Is(err, orbctl.ErrBadArgument) || !strings.Contains(err.Error(), "nosuchuser") {
		t.Fatalf("missing user: %v", err)
	}
}

// pyinfra runs every command as `sh -c '…'`: a leader that dies of SIGTERM
// while the rest of its group ignores it must not end the kill.
func TestCancelKillsGroupMembersThatIgnoreSIGTERM(t *testing.T) {
	c := simulator(t, "web")
	for name, runIt := range map[string]func(context.Context, Request) (int, error){
		"session": func(ctx context.Context, req Request) (int, error) {
			return newPool(t).Run(ctx, c, Key{Machine: "web"}, req)
		},
		"once": func(ctx context.Context, req Request) (int, error) {
			return newPool(t).RunOnce(ctx, c, Key{Machine: "web"}, req)
		},
	} {
		t.Run(name, func(t *testing.T) {
			marker := fmt.Sprintf("%d.%d", 900+len(name), time.Now().UnixNano()%1000)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, err := runIt(ctx, Request{Command: "sh -c \"trap '' TERM; sleep " + marker + "\""})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v", err)
			}
			if r := asRoot(c, "web", "ps -eo args | grep -c '^sleep "+marker+"'"); strings.TrimSpace(r.stdout) != "0" {
				t.Fatalf("the command ignoring SIGTERM survived its cancellation: %+v", r)
			}
		})
	}
}

// When the binary dies its end of the agent's stdin closes: the agent's
// watcher then kills the running command, and the agent removes its directory.
// `su -c` moves its command into a session of its own, out of the group.
func TestCancelReachesWhatSuMovedIntoANewSession(t *testing.T) {
	c := simulator(t, "web")
	if r := asRoot(c, "web", "command -v su && id tester"); r.code != 0 {
		t.Skip("no su or no user tester in the machine")
	}
	marker := fmt.Sprintf("7%d.%d", time.Now().UnixNano()%100, time.Now().UnixNano()%1000)
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	_, err := newPool(t).RunOnce(ctx, c, Key{Machine: "web", User: "root"},
		Request{Command: "su -s /bin/sh tester -c \"trap '' TERM; sleep " + marker + "\""})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if r := asRoot(c, "web", "ps -eo args | grep -c '^sleep "+marker+"'"); strings.TrimSpace(r.stdout) != "0" {
		t.Fatalf("the command su ran survived its cancellation: %+v", r)
	}
}

func TestTheCommandDiesWithTheBinary(t *testing.T) {
	c := simulator(t, "web")
	for _, user := range []string{"", "tester"} {
		t.Run("user="+user, func(t *testing.T) {
			key := Key{Machine: "web", User: user}
			s, err := start(context.Background(), c, key, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer s.proc.Kill()
			marker := fmt.Sprintf("%d.%d", 800+len(user), time.Now().UnixNano()%1000)
			cmd := "sh -c \"trap '' TERM; sleep " + marker + "\""
			if user != "" {
				cmd = "sudo -n " + cmd // root, reached through sudo
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.run(context.Background(), Request{Command: cmd})
				done <- err
			}()
			count := func() string {
				return strings.TrimSpace(asRoot(c, "web", "ps -eo args | grep -c '^sleep "+marker+"'").stdout)
			}
			deadline := time.Now().Add(10 * time.Second)
			for count() != "1" {
				if time.Now().After(deadline) {
					t.Fatal("the command did not start")
				}
				time.Sleep(50 * time.Millisecond)
			}
			s.proc.Stdin.Close() // what the kernel does when the binary is killed
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the command did not end after its agent's stdin closed")
			}
			// TERM, then KILL after 2 s to what ignored it (bounded loosely:
			// a loaded 2-core box stretches the 2 s).
			deadline = time.Now().Add(10 * time.Second)
			for count() != "0" || asRoot(c, "web", "test -e "+quote(s.dir)).code == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%s processes of the command survived the binary; the agent's directory: %+v",
						count(), asRoot(c, "web", "ls -la "+quote(s.dir)+"; ps -eo pid,pgid,args"))
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// A directory of an agent that was killed outright (its machine stopped, or
// SIGKILL) is removed by the next agent of that user; a live agent's is not.
func TestTheNextAgentRemovesWhatDeadAgentsLeft(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	live := strings.TrimSpace(run(p, c, "web", Request{Command: "cat $(ls -d /tmp/pyinfra-orbstack.*/agent)"}).stdout)
	dead := strings.TrimSpace(run(p, c, "web", Request{Command: "d=$(mktemp -d /tmp/pyinfra-orbstack.XXXXXXXX); echo 999999 pyinfra-orbstack-0123 > $d/agent; echo $d"}).stdout)
	other := strings.TrimSpace(asRoot(c, "web", "d=$(mktemp -d /tmp/pyinfra-orbstack.XXXXXXXX); echo 999999 pyinfra-orbstack-0123 > $d/agent; echo $d").stdout)
	if live == "" || dead == "" || other == "" {
		t.Fatalf("setting up: live %q dead %q other %q", live, dead, other)
	}
	if r := runOnce(c, "web", Request{Command: "true"}); r.err != nil {
		t.Fatal(r.err)
	}
	r := asRoot(c, "web", "ls -d /tmp/pyinfra-orbstack.*")
	if strings.Contains(r.stdout, dead+"\n") {
		t.Errorf("the dead agent's directory %s was left: %q", dead, r.stdout)
	}
	if !strings.Contains(r.stdout, other+"\n") {
		t.Errorf("another user's directory %s was removed: %q", other, r.stdout)
	}
	if n, _ := agents(t, c, "web"); n != 1 {
		t.Errorf("%d agents running, want the pooled one", n)
	}
	if r := run(p, c, "web", Request{Command: "echo still"}); r.err != nil || r.stdout != "still\n" {
		t.Errorf("the live session after a sweep: %+v", r)
	}
}

// An escalated transfer's stage directory that a stopped machine kept (its
// journal entry names a process that is gone) is removed by the next agent
// of that user; a directory of another shape named in the journal is not.
func TestTheNextAgentRemovesADeadTransfersStageDirectory(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	setup := `j=` + JournalDir + `; mkdir -p -m 700 "$j"
s=$(mktemp -d)/pyinfra-orbstack-0123456789abcdef; mkdir -m 700 "$s"; touch "$s/data"
o=$(mktemp -d)/not-a-stage; mkdir "$o"
printf '999999 deadnonce %s\n' "$s" > "$j/deadnonce"
printf '999999 othernonce %s\n' "$o" > "$j/othernonce"
echo "$s $o"`
	dirs := strings.Fields(run(p, c, "web", Request{Command: setup}).stdout)
	if len(dirs) != 2 {
		t.Fatalf("setting up: %q", dirs)
	}
	if r := runOnce(c, "web", Request{Command: "true"}); r.err != nil {
		t.Fatal(r.err)
	}
	r := run(p, c, "web", Request{Command: "ls -d " + dirs[0] + " " + dirs[1] + " 2>/dev/null; ls " + JournalDir})
	if strings.Contains(r.stdout, dirs[0]) {
		t.Errorf("the dead transfer's stage directory %s was left: %q", dirs[0], r.stdout)
	}
	if !strings.Contains(r.stdout, dirs[1]) {
		t.Errorf("a directory of another shape, %s, was removed: %q", dirs[1], r.stdout)
	}
	if strings.Contains(r.stdout, "nonce") {
		t.Errorf("journal entries were left: %q", r.stdout)
	}
}

// traced counts the orbctl calls c makes from now on.
func traced(c *orbctl.Client) func() []string {
	var mu sync.Mutex
	var calls []string
	c.Trace = func(args []string, _ time.Duration, _ error) {
		mu.Lock()
		calls = append(calls, strings.Join(args, " "))
		mu.Unlock()
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), calls...)
	}
}

func TestAWarmedSessionServesTheFirstCommand(t *testing.T) {
	c := simulator(t, "web")
	p := newPool(t)
	calls := traced(c)
	if err := p.Warm(context.Background(), c, Key{Machine: "web"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Warm(context.Background(), c, Key{Machine: "web"}); err != nil { // one is idle: nothing to do
		t.Fatal(err)
	}
	if r := run(p, c, "web", Request{Command: "echo hi"}); r.stdout != "hi\n" || r.err != nil {
		t.Fatalf("first command: %+v", r)
	}
	if got := calls(); len(got) != 1 {
		t.Fatalf("two warms and a command made %d orbctl calls, want 1 (the session): %q", len(got), got)
	}
}

func TestACommandArrivingWhileASessionWarmsWaitsForIt(t *testing.T) {
	c := simulator(t, "web")
	t.Setenv("ORBSIM_LATENCY", "300ms") // a slow orbctl: the command comes mid-start
	p := newPool(t)
	calls := traced(c)
	warmed := make(chan error, 1)
	go func() { warmed <- p.Warm(context.Background(), c, Key{Machine: "web"}) }()
	time.Sleep(100 * time.Millisecond)
	if r := run(p, c, "web", Request{Command: "echo hi"}); r.stdout != "hi\n" || r.err != nil {
		t.Fatalf("command: %+v", r)
	}
	if err := <-warmed; err != nil {
		t.Fatal(err)
	}
	if got := calls(); len(got) != 1 {
		t.Fatalf("a command during a warm made %d orbctl calls, want 1 (one session): %q", len(got), got)
	}
}

func TestClosingThePoolMidWarmLeavesNothingRunning(t *testing.T) {
	c := simulator(t, "web")
	t.Setenv("ORBSIM_LATENCY", "300ms")
	p := NewPool()
	warmed := make(chan error, 1)
	go func() { warmed <- p.Warm(context.Background(), c, Key{Machine: "web"}) }()
	time.Sleep(150 * time.Millisecond)
	start := time.Now()
	p.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %s while a session warmed", took)
	}
	if err := <-warmed; err == nil {
		// The start won the race: then Close must have ended the session.
		t.Log("the session started before Close")
	}
	t.Setenv("ORBSIM_LATENCY", "0")
	if n, dirs := agents(t, c, "web"); n != 0 || dirs != 0 {
		t.Fatalf("%d agents and %d private directories left after Close", n, dirs)
	}
	if err := p.Warm(context.Background(), c, Key{Machine: "web"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a closed pool warmed a session: %v", err)
	}
}
