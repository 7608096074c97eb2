//go:build linux

// Package orbctlcmd is the simulator's orbctl/orb command line: cobra commands
// whose Use strings, flags, output, error text, streams and exit codes follow
// the orbctl reference (/work/shared/docs/orbctl-reference.md, cited as §N).
// It shares no code with the connector's orbctl driver on purpose.
package orbctlcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/netsim"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/vm"
	"golang.org/x/sys/unix"
)

// Version is the OrbStack version the simulator reports and imitates.
type Version struct{ Major, Minor, Patch int }

// DefaultVersion is the newest 2.x the reference documents.
var DefaultVersion = Version{2, 2, 3}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Code is OrbStack's numeric version code: major·10⁶ + minor·10⁴ + patch·10².
func (v Version) Code() int { return v.Major*1000000 + v.Minor*10000 + v.Patch*100 }

// AtLeast compares against major.minor.patch.
func (v Version) AtLeast(major, minor, patch int) bool {
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Patch >= patch
}

// ParseVersion reads "2.2.3" (a leading "v" is allowed).
func ParseVersion(s string) (Version, error) {
	p := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(p) != 3 {
		return Version{}, fmt.Errorf("ORBSIM_VERSION=%q: want MAJOR.MINOR.PATCH, e.g. 2.2.3", s)
	}
	var n [3]int
	for i, x := range p {
		v, err := strconv.Atoi(x)
		if err != nil || v < 0 {
			return Version{}, fmt.Errorf("ORBSIM_VERSION=%q: want MAJOR.MINOR.PATCH, e.g. 2.2.3", s)
		}
		n[i] = v
	}
	return Version{n[0], n[1], n[2]}, nil
}

// App is what every command needs: the store, the runtime, the knobs and
// the standard streams.
type App struct {
	Store   *state.Store
	RT      *vm.Runtime
	Version Version
	// VMMode is ORBSIM_ORBSTACK: "" (running), "stopped", "starting" or "broken".
	VMMode  string
	MacUser string
	// Program is the name orbctl was invoked as ("orbctl" or "orb"), which
	// its messages use.
	Program string
	Stdin   *os.File
	Stdout  io.Writer
	Stderr  io.Writer
}

// rpcError is a server-side error: `[-32098] msg` on stderr, exit 1, no usage.
type rpcError struct{ msg string }

func (e *rpcError) Error() string { return "[-32098] " + e.msg }

func rpcErrorf(format string, a ...any) error { return &rpcError{fmt.Sprintf(format, a...)} }

func notFound(key string) error { return rpcErrorf("machine not found: '%s'", key) }

// exitStatus ends the process with a code after the command printed what it
// had to (run's remote status, status's 1/2, ...).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// isTTY reports whether f is a terminal.
func isTTY(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS)
	return err == nil
}

// macUser models the macOS user name OrbStack gives machines by default:
// ORBSIM_MAC_USER, else $SUDO_USER, else the invoking user's name. Issue 2
// asks for the invoking user's name, so a root invoker gets "root" (its
// acceptance list writes /root/f as the default user); set
// ORBSIM_MAC_USER=dev for a realistic non-root default user.
func macUser() string {
	if name := os.Getenv("ORBSIM_MAC_USER"); name != "" {
		return name
	}
	if name := os.Getenv("SUDO_USER"); name != "" {
		return name
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "root"
}

// newApp reads the environment knobs.
func newApp(stdout, stderr io.Writer) (*App, error) {
	v := DefaultVersion
	if s := os.Getenv("ORBSIM_VERSION"); s != "" {
		var err error
		if v, err = ParseVersion(s); err != nil {
			return nil, err
		}
	}
	mode := os.Getenv("ORBSIM_ORBSTACK")
	switch mode {
	case "", "running", "stopped", "starting", "broken":
	default:
		return nil, fmt.Errorf("ORBSIM_ORBSTACK=%q: want running, stopped, starting or broken", mode)
	}
	if mode == "running" {
		mode = ""
	}
	switch s := os.Getenv("ORBSIM_RUN_MISSING"); s {
	case "", "silent", "print":
	default:
		return nil, fmt.Errorf("ORBSIM_RUN_MISSING=%q: want silent or print", s)
	}
	return &App{Version: v, VMMode: mode, MacUser: macUser(), Program: "orbctl", Stdin: os.Stdin, Stdout: stdout, Stderr: stderr}, nil
}

// openStore opens $ORBSIM_HOME (lazily: `version` never needs it).
func (a *App) openStore() error {
	if a.Store != nil {
		return nil
	}
	s, err := state.Open(state.DefaultHome())
	if err != nil {
		return err
	}
	a.Store = s
	a.RT = &vm.Runtime{Store: s}
	return s.View(func(inv *state.Inventory) error { a.RT.Net = a.netPlan(inv.Subnet4); return nil })
}

// netPlan is where machines get addresses: 198.19.249.0/24 before 2.0,
// network.subnet4 as OrbStack last applied it from 2.0 (reference §10).
func (a *App) netPlan(applied string) netsim.Plan {
	if !a.Version.AtLeast(2, 0, 0) {
		return netsim.Plan1()
	}
	if applied == "" {
		applied = netsim.DefaultSubnet4
	}
	p, err := netsim.Plan2(applied)
	if err != nil { // refused by config set; only a hand-edited state gets here
		p, _ = netsim.Plan2(netsim.DefaultSubnet4)
	}
	return p
}

// vmRunning reports whether "OrbStack" is up.
func (a *App) vmRunning(inv *state.Inventory) bool {
	return a.VMMode == "" && !inv.VMStopped
}

// errAutoStart is our guess at how a failed auto-start reads (the reference
// does not document it).
var errAutoStart = errors.New("failed to start OrbStack: simulated start failure (ORBSIM_ORBSTACK=broken)")

// ensureVM is EnsureSconVMWithSpinner: most commands start OrbStack first.
// The spinner only draws on a TTY, so piped callers see nothing.
func (a *App) ensureVM() error {
	if a.VMMode == "broken" {
		return errAutoStart
	}
	stopped := false
	a.Store.View(func(inv *state.Inventory) error { stopped = inv.VMStopped; return nil })
	if !stopped {
		return nil
	}
	// OrbStack applies network.subnet4 when it starts (§10: "changes the
	// range after a restart").
	return a.Store.Update(func(inv *state.Inventory) error {
		inv.VMStopped = false
		inv.Subnet4 = inv.Config["network.subnet4"]
		a.RT.Net = a.netPlan(inv.Subnet4)
		return nil
	})
}

// latency models the real orbctl's per-invocation cost (ORBSIM_LATENCY).
func latency() error {
	s := os.Getenv("ORBSIM_LATENCY")
	if s == "" {
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("ORBSIM_LATENCY=%q: want a Go duration such as 50ms", s)
	}
	time.Sleep(d)
	return nil
}
