//go:build linux

package guest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExecSpec is one `orbctl run` (or push/pull copy) as the host hands it to
// the in-machine helper.
type ExecSpec struct {
	User string `json:"user"`
	// Workdir is the directory to start in; "" means the user's home. A
	// directory the user cannot enter silently becomes "/", as in OrbStack.
	Workdir string   `json:"workdir"`
	Script  bool     `json:"script"` // -s: args joined by spaces form a shell script
	Args    []string `json:"args"`
	Env     []string `json:"env"` // whitelisted caller variables, K=V
	// Direct runs Args without a login shell (push/pull's cp).
	Direct bool `json:"direct"`
	// ReadAny/WriteAny model the Mac file sharing for push/pull: the Linux
	// user can read (push) or write (pull) the host's files.
	ReadAny  bool `json:"read_any"`
	WriteAny bool `json:"write_any"`
	// HostRoot: the host passed its "/" as fd HostRootFD, and the command
	// sees it at HostRootPath (push/pull of isolated machines, which have no
	// /mnt/mac, from OrbStack 2.2.0).
	HostRoot bool `json:"host_root,omitempty"`
	// ReportStart: the host passed a pipe as StartedFD, and the helper
	// writes one byte to it once the command has started (see HoldEntry).
	ReportStart bool `json:"report_start"`
}

// StartedFD is the helper's fd for ExecSpec.ReportStart (after the binary
// on fd 3 and the request on fd 4).
const StartedFD = 5

// HostRootFD is the helper's fd for ExecSpec.HostRoot, and HostRootPath is
// where the command (which gets it as its fd 3) reaches the host's files.
const (
	HostRootFD   = 6
	HostRootPath = "/proc/self/fd/3"
)

// Account is a passwd entry.
type Account struct {
	Name  string
	UID   int
	GID   int
	Home  string
	Shell string
}

// LookupAccount reads name from passwd (a path, so tests and the host side
// can use it on a machine's layers too).
func LookupAccount(passwd, name string) (Account, error) {
	f, err := os.Open(passwd)
	if err != nil {
		return Account{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) < 7 || p[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(p[2])
		gid, err2 := strconv.Atoi(p[3])
		if err1 != nil || err2 != nil {
			continue
		}
		return Account{Name: name, UID: uid, GID: gid, Home: p[5], Shell: p[6]}, nil
	}
	return Account{}, fmt.Errorf("user not found: %s", name)
}

func supplementaryGroups(name string, primary int) []uint32 {
	gids := []uint32{uint32(primary)}
	f, err := os.Open("/etc/group")
	if err != nil {
		return gids
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) < 4 {
			continue
		}
		for _, member := range strings.Split(p[3], ",") {
			if member == name {
				if g, err := strconv.Atoi(p[2]); err == nil && g != primary {
					gids = append(gids, uint32(g))
				}
			}
		}
	}
	return gids
}

// canEnter reports whether uid (with gids) may chdir to dir: every component
// must be a searchable directory.
func canEnter(dir string, uid int, gids []uint32) bool {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	if uid == 0 {
		return true
	}
	p := "/"
	for _, c := range strings.Split(filepath.Clean(dir), "/") {
		if c == "" {
			continue
		}
		p = filepath.Join(p, c)
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return false
		}
		mode := st.Mode
		ok := false
		switch {
		case int(st.Uid) == uid:
			ok = mode&0o100 != 0
		case containsGID(gids, st.Gid):
			ok = mode&0o010 != 0
		default:
			ok = mode&0o001 != 0
		}
		if !ok {
			return false
		}
	}
	return true
}

func containsGID(gids []uint32, g uint32) bool {
	for _, x := range gids {
		if x == g {
			return true
		}
	}
	return false
}

// ShellQuote quotes one word for a POSIX shell, leaving safe words bare.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./-_", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// reportStart tells the host the command has started (ExecSpec.ReportStart).
var reportStart = func() {}

// ExecMain runs inside the machine (entered by nsenter) as root. It becomes
// the user's login shell running the command, forwards signals to it, and
// exits with its status.
func ExecMain(request string) int {
	// If orbctl dies (SIGKILL by a timeout), nsenter dies with it
	// (Pdeathsig), and we hear it as SIGUSR1: the session is gone, so the
	// command goes too, as when OrbStack's SSH session closes.
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGUSR1), 0, 0, 0)
	syscall.CloseOnExec(3) // our own executable, passed in by the host
	syscall.CloseOnExec(4) // the request
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1)

	// Safety net: never run a command outside a machine (say, if the init's
	// PID was reused by a host process between lookup and nsenter).
	if pid1, _ := os.ReadFile("/proc/1/cmdline"); !strings.Contains(string(pid1), InitCommand) {
		fmt.Fprintln(os.Stderr, "orbsim: refusing to run: not inside a simulated machine (did it just stop?)")
		return 1
	}
	var spec ExecSpec
	specJSON := []byte(request)
	if request == "fd:4" {
		f := os.NewFile(4, "request")
		f.Seek(0, io.SeekStart)
		specJSON, _ = io.ReadAll(f)
		f.Close()
	}
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		fmt.Fprintf(os.Stderr, "orbsim: bad exec request: %v\n", err)
		return 1
	}
	if spec.ReportStart {
		// Close the pipe before the command could inherit it; any exit
		// (an unknown user, say) also counts as "started" for the host.
		started := os.NewFile(StartedFD, "started")
		syscall.CloseOnExec(StartedFD)
		defer started.Close()
		reportStart = func() { started.Write([]byte{1}); started.Close() }
	}
	acct, err := LookupAccount("/etc/passwd", spec.User)
	if err != nil {
		// OrbStack prints nothing for an unknown user unless a PTY was
		// requested (reference §5), and exits 1.
		if isTTY(0) {
			fmt.Fprintf(os.Stderr, "user not found\n")
		}
		return 1
	}
	gids := supplementaryGroups(acct.Name, acct.GID)
	shell := acct.Shell
	if shell == "" || !executable(shell) {
		shell = "/bin/sh"
	}
	wd := spec.Workdir
	if wd == "" {
		wd = acct.Home
	}
	if !canEnter(wd, acct.UID, gids) {
		wd = "/"
	}
	path := "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
	if acct.UID == 0 {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{"HOME=" + acct.Home, "USER=" + acct.Name, "LOGNAME=" + acct.Name, "SHELL=" + shell,
		"PATH=" + path, "PWD=" + wd, "SSH_CONNECTION=::1 0 ::1 22"}
	env = append(env, spec.Env...)

	login := "-" + filepath.Base(shell)
	var cmd *exec.Cmd
	switch {
	case spec.Direct:
		cmd = exec.Command(spec.Args[0], spec.Args[1:]...)
		if lp, err := lookPath(spec.Args[0], path); err == nil {
			cmd.Path = lp
		}
	case len(spec.Args) == 0:
		cmd = &exec.Cmd{Path: shell, Args: []string{login}}
	case spec.Script:
		cmd = &exec.Cmd{Path: shell, Args: []string{login, "-c", strings.Join(spec.Args, " ")}}
	default:
		q := make([]string, len(spec.Args))
		for i, a := range spec.Args {
			q[i] = ShellQuote(a)
		}
		cmd = &exec.Cmd{Path: shell, Args: []string{login, "-c", strings.Join(q, " ")}}
	}
	cmd.Dir, cmd.Env = wd, env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if spec.HostRoot {
		syscall.CloseOnExec(HostRootFD)
		cmd.ExtraFiles = []*os.File{os.NewFile(HostRootFD, "host-root")} // fd 3 of the command
	}
	ownGroup := !isTTY(0)
	attr := &syscall.SysProcAttr{Setpgid: ownGroup}
	if acct.UID != 0 {
		attr.Credential = &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.GID), Groups: gids}
		if spec.ReadAny {
			attr.AmbientCaps = append(attr.AmbientCaps, unix.CAP_DAC_READ_SEARCH)
		}
		if spec.WriteAny {
			attr.AmbientCaps = append(attr.AmbientCaps, unix.CAP_DAC_OVERRIDE)
		}
	}
	cmd.SysProcAttr = attr
	err = cmd.Start()
	reportStart()
	if err != nil {
		fmt.Fprintf(os.Stderr, "orbsim: cannot start %s: %v\n", cmd.Path, err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				target := cmd.Process.Pid
				if ownGroup {
					target = -target
				}
				sig := s.(syscall.Signal)
				if sig == unix.SIGUSR1 {
					sig = unix.SIGKILL
				}
				unix.Kill(target, sig)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	return exitCode(err)
}

// exitCode maps a finished command to orbctl's exit status. A command killed
// by a signal reports 128+N, as a shell would (OrbStack's exact code for a
// signalled remote command is not documented; this is our pick).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

func isTTY(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range strings.Split(path, ":") {
		if p := filepath.Join(d, name); executable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}
