//go:build linux

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reference §6: `orbctl run` semantics, and §7 push/pull.

func TestRun(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("runner")
	run := func(args ...string) result { return s.orbctl(append([]string{"run", "-m", "runner"}, args...)...) }

	t.Run("exit status is the remote command's", func(t *testing.T) {
		assert.Equal(t, 42, run("sh", "-c", "exit 42").Code)
	})
	t.Run("stdout and stderr stay separate", func(t *testing.T) {
		assert.Equal(t, result{"out\n", "err\n", 0}, run("sh", "-c", "echo out; echo err >&2"))
	})
	t.Run("stdin passes through", func(t *testing.T) {
		r := s.runIn("line1\nline2\n", "orbctl", "run", "-m", "runner", "wc", "-l")
		assert.Equal(t, "2\n", r.Stdout)
	})
	t.Run("argument boundaries are preserved, nothing is expanded", func(t *testing.T) {
		r := run("printf", "[%s]", "a b", "$HOME", "*", "it's", "")
		assert.Equal(t, "[a b][$HOME][*][it's][]", r.Stdout)
	})
	t.Run("long arguments full of characters JSON escapes pass intact", func(t *testing.T) {
		a, b := strings.Repeat("<", 60000), strings.Repeat(`"`, 60000)
		r := run("sh", "-c", `[ "$1" = "$(printf '%060000d' 0 | tr 0 '<')" ] && echo ${#1} ${#2}`, "x", a, b)
		assert.Equal(t, result{"60000 60000\n", "", 0}, r)
	})
	t.Run("-s passes the arguments to the shell as a script", func(t *testing.T) {
		assert.Equal(t, "/home/dev\n", run("-s", "-w", "", "echo", "$HOME").Stdout)
	})
	t.Run("commands run through the user's login shell", func(t *testing.T) {
		assert.Equal(t, "login\n", run("-s", "shopt -q login_shell && echo login").Stdout)
	})
	t.Run("-u picks the user", func(t *testing.T) {
		assert.Equal(t, "root\n", run("-u", "root", "whoami").Stdout)
	})
	t.Run("an unknown -u user exits 1 silently without a PTY", func(t *testing.T) {
		assert.Equal(t, result{"", "", 1}, run("-u", "nosuchuser", "true"))
	})
	t.Run("-w sets the directory", func(t *testing.T) {
		assert.Equal(t, "/etc\n", run("-w", "/etc", "pwd").Stdout)
	})
	t.Run("-w to a missing directory silently falls back to /", func(t *testing.T) {
		assert.Equal(t, result{"/\n", "", 0}, run("-w", "/does/not/exist", "pwd"))
	})
	t.Run("-w to a directory the user cannot enter falls back to /", func(t *testing.T) {
		assert.Equal(t, "/\n", run("-w", "/root", "pwd").Stdout)
	})
	t.Run(`-w "" is the user's home`, func(t *testing.T) {
		assert.Equal(t, "/home/dev\n", run("-w", "", "pwd").Stdout)
	})
	t.Run("without -w the command starts in the caller's cwd under /mnt/mac", func(t *testing.T) {
		assert.Equal(t, filepath.Join("/mnt/mac", s.dir)+"\n", run("-u", "root", "pwd").Stdout)
	})
	t.Run("-p translates host paths to /mnt/mac", func(t *testing.T) {
		assert.Equal(t, "/mnt/mac/etc/hostname\n", run("-p", "echo", "/etc/hostname").Stdout)
	})
	t.Run("only whitelisted variables are forwarded; ORBENV adds more", func(t *testing.T) {
		r := s.with("FOO=bar", "TERM=xterm-test").orbctl("run", "-m", "runner", "sh", "-c", `echo "$FOO|$TERM"`)
		assert.Equal(t, "|xterm-test\n", r.Stdout)
		r = s.with("FOO=bar", "ORBENV=FOO").orbctl("run", "-m", "runner", "sh", "-c", `echo "$FOO"`)
		assert.Equal(t, "bar\n", r.Stdout)
	})
	t.Run("the environment names the user", func(t *testing.T) {
		assert.Equal(t, "dev dev /home/dev\n", run("sh", "-c", `echo $USER $LOGNAME $HOME`).Stdout)
	})
	t.Run("a stopped machine is started by run", func(t *testing.T) {
		s.ok("stop", "runner")
		assert.Equal(t, "ok\n", run("echo", "ok").Stdout)
		rec, _ := s.info("runner")
		assert.Equal(t, "running", rec.State)
	})
	t.Run("exec and shell are aliases", func(t *testing.T) {
		assert.Equal(t, "x\n", s.ok("exec", "-m", "runner", "echo", "x"))
		assert.Equal(t, "y\n", s.ok("shell", "-m", "runner", "echo", "y"))
	})
	t.Run("-h prints help", func(t *testing.T) {
		assert.Contains(t, s.ok("run", "-h"), "Usage:\n  orbctl run [flags] -- [COMMAND] [ARGS]...")
	})
}

// The connector's timeout sends SIGTERM to orbctl, then SIGKILL 2 s later:
// the remote command must really be gone either way.
func TestRunSignals(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("sig")
	start := func(script, marker string) *os.Process {
		cmd := s.command("orbctl", "run", "-m", "sig", "sh", "-c", script)
		require.NoError(t, cmd.Start())
		eventually(t, marker+" running", func() bool { return hostHasProcess(marker) })
		go cmd.Wait()
		return cmd.Process
	}
	t.Run("SIGTERM to orbctl is forwarded to the remote command", func(t *testing.T) {
		p := start("sleep 611", "sleep 611")
		require.NoError(t, p.Signal(syscall.SIGTERM))
		eventually(t, "remote sleep gone", func() bool { return !hostHasProcess("sleep 611") })
	})
	t.Run("exit status of a remote command killed by a signal is 128+N", func(t *testing.T) {
		cmd := s.command("orbctl", "run", "-m", "sig", "sleep", "612")
		require.NoError(t, cmd.Start())
		eventually(t, "sleep running", func() bool { return hostHasProcess("sleep 612") })
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		require.Error(t, err)
		assert.Equal(t, 143, cmd.ProcessState.ExitCode())
	})
	t.Run("SIGKILL to orbctl still ends a command that ignores SIGTERM", func(t *testing.T) {
		p := start(`trap "" TERM; sleep 613`, "sleep 613")
		p.Signal(syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, p.Signal(syscall.SIGKILL))
		eventually(t, "remote sleep gone", func() bool { return !hostHasProcess("sleep 613") })
	})
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("life")
	t.Run("a background process keeps running between runs", func(t *testing.T) {
		s.ok("run", "-m", "life", "sh", "-c", "nohup sleep 621 >/dev/null 2>&1 &")
		assert.Contains(t, s.ok("run", "-m", "life", "ps", "-eo", "args"), "sleep 621")
	})
	t.Run("processes live in their own PID namespace", func(t *testing.T) {
		out := s.ok("run", "-m", "life", "ps", "-eo", "pid=,args=")
		assert.Regexp(t, `(?m)^\s*1 `, out)
		assert.NotContains(t, out, "process_api", "host processes are invisible")
	})
	t.Run("stop ends every process; start keeps files", func(t *testing.T) {
		s.ok("run", "-m", "life", "sh", "-c", "echo persisted > ~/f")
		s.ok("stop", "life")
		assert.False(t, hostHasProcess("sleep 621"))
		rec, _ := s.info("life")
		assert.Equal(t, "stopped", rec.State)
		s.ok("start", "life")
		assert.Equal(t, "persisted\n", s.ok("run", "-m", "life", "-w", "", "cat", "f"))
	})
	t.Run("start and stop of a machine in that state are no-ops", func(t *testing.T) {
		assert.Equal(t, result{"", "", 0}, s.orbctl("start", "life"))
		s.ok("stop", "life")
		assert.Equal(t, result{"", "", 0}, s.orbctl("stop", "life"))
	})
	t.Run("restart comes back running", func(t *testing.T) {
		s.ok("restart", "life")
		rec, _ := s.info("life")
		assert.Equal(t, "running", rec.State)
	})
	t.Run("stop with no names stops OrbStack and every machine", func(t *testing.T) {
		s.machine("life2")
		s.ok("stop")
		assert.Equal(t, result{"Stopped\n", "", 1}, s.orbctl("status"))
		assert.Equal(t, result{"", "OrbStack is not running\n", 0}, s.orbctl("stop", "life"))
		assert.Equal(t, "", s.ok("list", "-r", "-q"), "list auto-starts OrbStack, machines stay stopped")
		assert.Equal(t, result{"Running\n", "", 0}, s.orbctl("status"))
	})
	t.Run("start with no names starts a stopped OrbStack silently", func(t *testing.T) {
		s.ok("stop")
		assert.Equal(t, result{"", "", 0}, s.orbctl("start"))
		assert.Equal(t, result{"Running\n", "", 0}, s.orbctl("status"))
	})
	t.Run("start -a starts every machine", func(t *testing.T) {
		s.ok("start", "-a")
		assert.Equal(t, "life\nlife2\n", s.ok("list", "-r", "-q"))
	})
}

func TestNetwork(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("neta")
	s.machine("netb")
	_, raw := s.info("netb")
	ip := raw["ip4"].(string)
	t.Run("machines resolve and reach each other as NAME.orb.local", func(t *testing.T) {
		s.ok("run", "-m", "neta", "ping", "-c1", "-W2", "netb.orb.local")
	})
	t.Run("the host reaches a machine at its ip4", func(t *testing.T) {
		out, err := execOut("ping", "-c1", "-W2", ip)
		assert.NoError(t, err, out)
	})
	t.Run("ip6 is the machine's address, in the form ip -6 addr shows", func(t *testing.T) {
		if raw["ip6"] == nil {
			t.Skip("the host has IPv6 disabled")
		}
		assert.Contains(t, s.ok("run", "-m", "netb", "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"), " "+raw["ip6"].(string)+"/64 ")
	})
	t.Run("machines reach each other as NAME.orb.local over IPv6 too", func(t *testing.T) {
		if raw["ip6"] == nil {
			t.Skip("the host has IPv6 disabled")
		}
		s.ok("run", "-m", "neta", "ping", "-6", "-c1", "-W2", "netb.orb.local")
	})
	t.Run("the host is host.orb.internal", func(t *testing.T) {
		s.ok("run", "-m", "neta", "ping", "-c1", "-W2", "host.orb.internal")
	})
	t.Run("user lines in /etc/hosts survive a refresh", func(t *testing.T) {
		s.ok("run", "-m", "neta", "-u", "root", "sh", "-c", "echo '10.9.9.9 mine.example' >> /etc/hosts")
		s.ok("restart", "netb")
		hosts := s.ok("run", "-m", "neta", "cat", "/etc/hosts")
		assert.Contains(t, hosts, "10.9.9.9 mine.example")
		assert.Len(t, regexp.MustCompile(`(?m)^\d+\.\d+\.\d+\.\d+\tnetb\.orb\.local$`).FindAllString(hosts, -1), 1, hosts)
	})
	t.Run("a stopped machine has no address and drops out of the others' hosts", func(t *testing.T) {
		s.ok("stop", "netb")
		assert.NotContains(t, s.ok("run", "-m", "neta", "cat", "/etc/hosts"), "netb.orb.local")
	})
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("isoa")
	s.machine("isob")
	t.Run("the host's homes and temp files are not visible", func(t *testing.T) {
		assert.Equal(t, 1, s.orbctl("run", "-m", "isoa", "test", "-e", filepath.Join(s.home, "state.json")).Code)
	})
	t.Run("/tmp writes stay in the machine", func(t *testing.T) {
		s.ok("run", "-m", "isoa", "sh", "-c", "echo a > /tmp/isolation-probe")
		assert.Equal(t, 1, s.orbctl("run", "-m", "isob", "test", "-e", "/tmp/isolation-probe").Code)
		_, err := os.Stat("/tmp/isolation-probe")
		assert.True(t, os.IsNotExist(err))
	})
	t.Run("--isolated machines have no /mnt/mac", func(t *testing.T) {
		s.machine("sealed", "--isolated")
		assert.Equal(t, 1, s.orbctl("run", "-m", "sealed", "test", "-e", "/mnt/mac").Code)
		assert.Equal(t, 0, s.orbctl("run", "-m", "isoa", "test", "-e", "/mnt/mac/etc").Code)
	})
}

func TestPushPull(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("files")
	dir := t.TempDir()
	s.dir = dir
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hi\n"), 0o600))
	t.Run("push with one argument copies into the Linux home as the default user", func(t *testing.T) {
		s.ok("push", "-m", "files", "hello.txt")
		assert.Equal(t, "dev hi\n", s.ok("run", "-m", "files", "sh", "-c", "stat -c %U ~/hello.txt | tr '\\n' ' '; cat ~/hello.txt"))
	})
	t.Run("a relative destination is relative to the Linux home", func(t *testing.T) {
		s.ok("run", "-m", "files", "mkdir", "-p", "/home/dev/sub")
		s.ok("push", "-m", "files", "hello.txt", "sub/renamed.txt")
		assert.Equal(t, "hi\n", s.ok("run", "-m", "files", "cat", "/home/dev/sub/renamed.txt"))
	})
	t.Run("a destination under the Mac $HOME means the same path under the Linux home", func(t *testing.T) {
		s.ok("push", "-m", "files", "hello.txt", "/root/athome.txt") // the harness's HOME is /root
		assert.Equal(t, "hi\n", s.ok("run", "-m", "files", "cat", "/home/dev/athome.txt"))
	})
	t.Run("before 2.2.3 a privileged destination fails like cp", func(t *testing.T) {
		r := s.with("ORBSIM_VERSION=2.2.2").orbctl("push", "-m", "files", "hello.txt", "/etc/x")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "cp: cannot create regular file '/etc/x': Permission denied")
	})
	t.Run("from 2.2.3 a privileged destination works (GH#406, #407)", func(t *testing.T) {
		s.with("ORBSIM_VERSION=2.2.3").ok("push", "-m", "files", "hello.txt", "/etc/x")
		assert.Equal(t, "hi\n", s.ok("run", "-m", "files", "cat", "/etc/x"))
		s.ok("run", "-m", "files", "-u", "root", "sh", "-c", "chmod 600 /etc/x && chown root /etc/x")
		s.with("ORBSIM_VERSION=2.2.3").ok("pull", "-m", "files", "/etc/x", "fromroot.txt")
		b, err := os.ReadFile(filepath.Join(dir, "fromroot.txt"))
		require.NoError(t, err)
		assert.Equal(t, "hi\n", string(b))
	})
	t.Run("pull defaults to the caller's cwd", func(t *testing.T) {
		s.ok("run", "-m", "files", "sh", "-c", "echo back > ~/back.txt")
		s.ok("pull", "-m", "files", "back.txt")
		b, err := os.ReadFile(filepath.Join(dir, "back.txt"))
		require.NoError(t, err)
		assert.Equal(t, "back\n", string(b))
	})
	t.Run("a missing source is cp's error and exit status", func(t *testing.T) {
		r := s.orbctl("pull", "-m", "files", "nope.txt", dir)
		assert.Equal(t, result{"", "cp: cannot stat 'nope.txt': No such file or directory\n", 1}, r)
	})
	t.Run("push starts a stopped machine", func(t *testing.T) {
		s.ok("stop", "files")
		s.ok("push", "-m", "files", "hello.txt", "again.txt")
		assert.Equal(t, "hi\n", s.ok("run", "-m", "files", "cat", "/home/dev/again.txt"))
	})
}

func TestConcurrency(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	names := []string{}
	done := make(chan result)
	for i := 0; i < 10; i++ {
		name := "cc" + string(rune('a'+i))
		names = append(names, name)
		go func() { done <- s.orbctl("create", "debian", name) }()
	}
	for range names {
		r := <-done
		require.Equal(t, 0, r.Code, r.Stderr)
	}
	t.Run("20 concurrent runs over 10 machines", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			name := names[i%10]
			go func() {
				done <- s.orbctl("run", "-m", name, "-u", "root", "sh", "-c", "hostname > /tmp/h$$; cat /tmp/h$$")
			}()
		}
		seen := map[string]int{}
		for i := 0; i < 20; i++ {
			r := <-done
			require.Equal(t, 0, r.Code, r.Stderr)
			seen[strings.TrimSpace(r.Stdout)]++
		}
		for _, n := range names {
			assert.Equal(t, 2, seen[n], n)
		}
	})
	t.Run("parallel creates and deletes lose nothing", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			del, add := names[i], "new"+names[i]
			go func() { done <- s.orbctl("delete", "-f", del) }()
			go func() { done <- s.orbctl("create", "debian", add) }()
		}
		for i := 0; i < 10; i++ {
			r := <-done
			require.Equal(t, 0, r.Code, r.Stderr)
		}
		want := append([]string{}, names[5:]...)
		for _, n := range names[:5] {
			want = append(want, "new"+n)
		}
		assert.ElementsMatch(t, want, strings.Fields(s.ok("list", "-q")))
		assert.ElementsMatch(t, want, strings.Fields(s.ok("list", "-r", "-q")), "all running")
	})
}

func execOut(name string, args ...string) (string, error) {
	c := newCmd(name, args...)
	out, err := c.CombinedOutput()
	return string(out), err
}
