package remote

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ConfiguredControlPath is the ControlPath the user's own ssh config (or -o
// options) gives m, from `ssh -G` (which reads the config without
// connecting), or "" when there is none ("none") or ssh -G fails: then the
// relay makes its own master.
func (m Mac) ConfiguredControlPath(getenv func(string) string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	argv := append(m.options(getenv), "-G", "--", m.Host)
	cmd := exec.CommandContext(ctx, SSHProgram(getenv), argv...)
	cmd.Stdin = nil
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if strings.EqualFold(k, "controlpath") {
			if v = strings.TrimSpace(v); v != "" && v != "none" {
				return v
			}
			return ""
		}
	}
	return ""
}

// controlDir makes the private directory (0700) of a relay's master socket.
// A short path: a Unix socket's path is limited to about 104 bytes, and ssh
// binds a longer temporary name first.
func controlDir() (string, error) {
	base := "/tmp"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = os.TempDir()
	}
	sweepControlDirs(base)
	return os.MkdirTemp(base, controlDirPrefix+strconv.Itoa(os.Getpid())+"-")
}

const controlDirPrefix = "pyinfra-orbstack-ssh-"

// sweepControlDirs removes the control directories of relays that are gone
// (killed with SIGKILL, which no cleanup survives): those of this user whose
// name's pid no longer runs. (ssh removes its socket when it ends.)
func sweepControlDirs(base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, controlDirPrefix+"*-*"))
	for _, d := range dirs {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(d), controlDirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

func controlSocket(dir string) string { return filepath.Join(dir, "c") }

// ownGroup starts cmd in a process group of its own, so that a terminal's
// Ctrl-C, which reaches the relay, does not kill ssh before the relay has
// shut down in order.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup signals cmd's process group (cmd was started by ownGroup).
func killGroup(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.Process == nil {
		return
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
		cmd.Process.Signal(sig)
	}
}
