//go:build linux

// Package vm runs simulated machines: it boots a machine's init inside
// fresh namespaces over its overlayfs root, wires its network, enters it for
// commands (through util-linux nsenter), and stops it.
package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/guest"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/netsim"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/pkgproxy"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/state"
	"golang.org/x/sys/unix"
)

// Preflight names what is missing for real isolation, or returns nil. The
// simulator refuses to run anything without it: there is no fallback that
// would run a deploy on the host itself.
func Preflight() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, fmt.Sprintf("root privileges (running as uid %d)", os.Geteuid()))
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
		missing = append(missing, "overlayfs (modprobe overlay)")
	}
	for _, ns := range []string{"mnt", "pid", "uts", "net", "ipc"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			missing = append(missing, ns+" namespaces")
		}
	}
	for _, tool := range []string{"nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{"nsenter": "util-linux", "ip": "iproute2"}[tool]
			missing = append(missing, fmt.Sprintf("%s in PATH (package %s)", tool, pkg))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("orbsim: cannot run isolated machines, missing: %s", strings.Join(missing, "; "))
}

// Runtime runs the machines of one store.
type Runtime struct {
	Store *state.Store
	// Net is where started machines get their addresses (the emulated
	// version's plan and the applied network.subnet4).
	Net netsim.Plan
}

func (r *Runtime) layers(m *state.Machine) Layers {
	base := m.Base
	if base == "" {
		base = "/"
	}
	return LayersFor(r.Store.MachineDir(m.ID), base)
}

// Prepare creates a new machine's directories and upper layer.
func (r *Runtime) Prepare(m *state.Machine) error {
	if strings.ContainsAny(r.Store.Home+m.Base, ",:") {
		return fmt.Errorf("ORBSIM_HOME and rootfs paths must not contain ',' or ':' (overlayfs option syntax): %s, %s", r.Store.Home, m.Base)
	}
	var fs unix.Statfs_t
	if unix.Statfs(r.Store.Home, &fs) == nil && fs.Type == unix.OVERLAYFS_SUPER_MAGIC {
		return fmt.Errorf("ORBSIM_HOME %s is on overlayfs, which cannot hold a machine's upper layer; point ORBSIM_HOME at ext4, xfs or a tmpfs", r.Store.Home)
	}
	return r.layers(m).Prepare(m.Name, m.DefaultUser, AdminGroup(m.Distro), []string{r.Store.Home})
}

// ConsoleLog is the file `orbctl logs` prints.
func (r *Runtime) ConsoleLog(m *state.Machine) string {
	return filepath.Join(r.Store.MachineDir(m.ID), "console.log")
}

// Start boots m if it is not running. The caller holds the store lock and
// saves m afterwards.
func (r *Runtime) Start(m *state.Machine) error {
	if m.Running() {
		return nil
	}
	packages, err := pkgproxy.Enabled()
	if err != nil {
		return err
	}
	r.cleanup(m)
	l := r.layers(m)
	if _, err := os.Stat(l.Upper); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("its files are gone (%s was removed); delete the machine and create it again", l.Upper)
	}
	console, err := os.OpenFile(r.ConsoleLog(m), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	spec, _ := json.Marshal(guest.InitSpec{Name: m.Name, Lower: l.Base, Upper: l.Upper, Work: l.Work, Merged: l.Merged,
		MacMount: !m.Isolated, Mounts: m.Mounts})
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, guest.InitCommand, string(spec))
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = console, console
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWNET | unix.CLONE_NEWIPC,
		Setsid:     true,
	}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start machine init (namespaces available?): %w", err)
	}
	pw.Close()
	reply, _ := io.ReadAll(pr)
	if string(reply) != "ok" {
		cmd.Process.Kill()
		cmd.Wait()
		if len(reply) == 0 {
			reply = []byte("init exited before it was ready; see " + r.ConsoleLog(m))
		}
		return fmt.Errorf("machine didn't start: %s", reply)
	}
	pid := cmd.Process.Pid
	st, _, err := state.ProcStart(pid)
	if err != nil {
		cmd.Process.Kill()
		return err
	}
	m.Init = state.Process{PID: pid, StartTime: st}
	// The init outlives this orbctl; it is not our child to wait for.
	cmd.Process.Release()
	lease, err := netsim.Take(r.Net, netsim.Lease{IP4: m.IP4, Relay: m.Relay4}, m.Init, r.Store.Home, m.ID)
	if err == nil {
		m.IP4, m.Relay4 = lease.IP4, lease.Relay
		err = netsim.Attach(pid, r.Net, lease)
	}
	if err != nil {
		r.Stop(m)
		return fmt.Errorf("machine didn't start in time (missing IP address): %w", err)
	}
	r.setUpPackages(m, packages)
	return nil
}

// setUpPackages points the just started machine m at its plan's package
// proxy, started if need be, or (ORBSIM_PACKAGES=0, or a proxy that cannot
// start) removes what an earlier start wrote. A machine without package
// access still runs, with a warning that says why.
func (r *Runtime) setUpPackages(m *state.Machine, on bool) {
	root := fmt.Sprintf("/proc/%d/root", m.Init.PID)
	if on {
		err := pkgproxy.Ensure(r.Net.Gateway, r.Net.Machines)
		if err == nil {
			err = pkgproxy.Configure(root, pkgproxy.Plan{Gateway: r.Net.Gateway, Machines: r.Net.Machines, Relay: r.Net.Relay})
		}
		if err == nil {
			return
		}
		fmt.Fprintf(os.Stderr, "orbsim: warning: %s cannot reach package registries: %v\n", m.Name, err)
	}
	if err := pkgproxy.Unconfigure(root); err != nil {
		fmt.Fprintf(os.Stderr, "orbsim: warning: cannot remove the package proxy settings of %s: %v\n", m.Name, err)
	}
}

// entryLock is the file that orders entering a machine (run, push, pull)
// against stopping it: an entry holds it shared from the moment it picks the
// machine's init until its command has started inside, and Stop takes it
// exclusively. So a command that races a stop or a delete either starts
// before it (and is then ended with the machine, like any of its processes)
// or sees the machine stopped; it never trips over a half-gone init.
func (r *Runtime) entryLock(m *state.Machine) string {
	return filepath.Join(r.Store.MachineDir(m.ID), "entry.lock")
}

// HoldEntry takes the entry lock shared and reports whether m's init is
// still alive under it. The caller calls release once its command has
// started in the machine (or has failed to).
func (r *Runtime) HoldEntry(m *state.Machine) (release func(), alive bool) {
	f, err := os.OpenFile(r.entryLock(m), os.O_RDONLY|os.O_CREATE, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, false // the machine's directory is gone: deleted
	}
	if err != nil {
		// No lock file to be had (a full disk): enter unordered rather
		// than refuse; the race with stop is rare, a full disk is not.
		return func() {}, m.Init.Alive()
	}
	if err := flockRetry(f, unix.LOCK_SH); err != nil {
		f.Close()
		return func() {}, false
	}
	return func() { f.Close() }, m.Init.Alive()
}

// holdOffEntries waits (up to a few seconds: a stopped orbctl must not
// block stop forever) until no command is entering m, and keeps new ones out
// until release.
func (r *Runtime) holdOffEntries(m *state.Machine) (release func()) {
	f, err := os.OpenFile(r.entryLock(m), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return func() {}
	}
	deadline := time.Now().Add(5 * time.Second)
	for unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return func() { f.Close() }
}

func flockRetry(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Stop ends m's init (and with it every process of the machine) and frees
// its address. The caller holds the store lock and saves m afterwards.
func (r *Runtime) Stop(m *state.Machine) error {
	if m.Running() {
		defer r.holdOffEntries(m)()
		unix.Kill(m.Init.PID, unix.SIGTERM)
		if !waitGone(m.Init, 5*time.Second) {
			unix.Kill(m.Init.PID, unix.SIGKILL)
			if !waitGone(m.Init, 3*time.Second) {
				return fmt.Errorf("machine init %d did not exit", m.Init.PID)
			}
		}
	}
	r.cleanup(m)
	return nil
}

// cleanup releases what a dead init leaves behind (after a stop, a crash or
// a host reboot).
func (r *Runtime) cleanup(m *state.Machine) {
	if m.Init.PID != 0 && !m.Init.Alive() {
		// No link cleanup here: the kernel removes the veth pair with the
		// namespace, and by now another machine may already own index N
		// (Attach clears any leftover link under its own lease).
		netsim.Release(netsim.Lease{IP4: m.IP4, Relay: m.Relay4}, m.Init)
		m.Init = state.Process{}
	}
}

// Reconcile clears the runtime fields of machines whose init died, and
// stops inits that no record owns. The caller holds the store lock.
func (r *Runtime) Reconcile(inv *state.Inventory) {
	for _, m := range inv.Machines {
		r.cleanup(m)
	}
	r.stopOrphans(inv)
}

// stopOrphans kills machine inits of this store that no record owns. An
// orbctl killed between booting a machine and saving its record (a CI
// timeout during create) leaves one behind, holding an address lease for
// as long as it lives. Under the store lock no other orbctl of this store
// can be booting a machine, so an init without a record is such an orphan.
// Its directory stays (a machine's files are never deleted behind a user's
// back); it no longer appears anywhere.
func (r *Runtime) stopOrphans(inv *state.Inventory) {
	owned := map[int]bool{}
	for _, m := range inv.Machines {
		owned[m.Init.PID] = true
	}
	prefix := filepath.Join(r.Store.Home, "machines") + "/"
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || owned[pid] {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) < 3 || args[1] != guest.InitCommand {
			continue
		}
		var spec guest.InitSpec
		if json.Unmarshal([]byte(args[2]), &spec) == nil && strings.HasPrefix(spec.Upper, prefix) {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func waitGone(p state.Process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !p.Alive() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return !p.Alive()
}

// IP is the machine's IPv4 address while it runs, else "".
func IP(m *state.Machine) string {
	if !m.Running() {
		return ""
	}
	return m.IP4
}

// IP6 is the machine's IPv6 address while it runs and the host has IPv6.
func IP6(m *state.Machine) string {
	if IP(m) == "" {
		return ""
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6"); err != nil || strings.TrimSpace(string(b)) != "0" {
		return ""
	}
	return netsim.IP6(m.IP4)
}

// RefreshHosts rewrites the managed /etc/hosts block of every running
// machine so all of them resolve each other as NAME.orb.local: the relay
// address in 2.x, the machine's own in 1.x.
func (r *Runtime) RefreshHosts(inv *state.Inventory) {
	var peers []netsim.Peer
	for _, m := range inv.Machines {
		if ip := IP(m); ip != "" {
			if m.Relay4 != "" {
				ip = m.Relay4
			}
			peers = append(peers, netsim.Peer{Name: m.Name, IP: ip, IP6: IP6(m)})
		}
	}
	for _, m := range inv.Machines {
		if m.Running() {
			if err := netsim.WriteHosts(m.Init.PID, m.Name, r.gateway(m), peers); err != nil {
				fmt.Fprintf(os.Stderr, "orbsim: warning: cannot update /etc/hosts of %s: %v\n", m.Name, err)
			}
		}
	}
}

// gateway is host.orb.internal for m: the gateway of the plan its address
// came from (a machine started before a subnet change keeps its own).
func (r *Runtime) gateway(m *state.Machine) string {
	if a, err := netip.ParseAddr(m.IP4); err == nil && !r.Net.Machines.Contains(a) {
		b := a.As4()
		b[3] = 1
		return netip.AddrFrom4(b).String()
	}
	return r.Net.Gateway.String()
}

// Command builds the host-side process that runs spec inside the running
// machine m: nsenter into its namespaces, then our own binary (passed as fd
// 3, so the machine needs no copy of it) as the in-machine helper.
func (r *Runtime) Command(m *state.Machine, spec guest.ExecSpec) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	exe, err := os.Open(self)
	if err != nil {
		return nil, err
	}
	// The request travels in a memfd (fd 4), not in argv: one argv string
	// is capped at 128 KiB, and pyinfra commands can be longer.
	b, _ := json.Marshal(spec)
	fd, err := unix.MemfdCreate("orbsim-exec", unix.MFD_CLOEXEC)
	if err != nil {
		exe.Close()
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	req := os.NewFile(uintptr(fd), "orbsim-exec")
	if _, err := req.Write(b); err != nil {
		exe.Close()
		req.Close()
		return nil, err
	}
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(m.Init.PID), "-m", "-u", "-i", "-n", "-p", "-r", "-w",
		"--", "/proc/self/fd/3", guest.ExecCommand, "fd:4")
	cmd.ExtraFiles = []*os.File{exe, req}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return cmd, nil
}

// SetHostname changes a running machine's hostname (after a rename).
func (r *Runtime) SetHostname(m *state.Machine) {
	if m.Running() {
		exec.Command("nsenter", "-t", strconv.Itoa(m.Init.PID), "-u", "hostname", m.Name).Run()
	}
	l := r.layers(m)
	l.writeFile("/etc/hostname", []byte(m.Name+"\n"), 0o644)
}

// AddUser makes user exist in a machine (for `config set machine.N.username`).
func (r *Runtime) AddUser(m *state.Machine, user string) error {
	if m.Running() {
		return errors.New("stop the machine first")
	}
	return r.layers(m).AddUser(user, AdminGroup(m.Distro))
}

// Pause stops (SIGSTOP) every process of the running machine m but its init
// and returns the function that continues them. OrbStack pauses the source
// of a clone (§2); without that, copying a busy machine fails on files that
// vanish while cp reads their directory. Processes that were already stopped
// stay stopped.
func (r *Runtime) Pause(m *state.Machine) (resume func()) {
	nsOf := func(pid int) string { l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); return l }
	ns := nsOf(m.Init.PID)
	if !m.Running() || ns == "" {
		return func() {}
	}
	stopped := map[int]bool{}
	// Repeat until a pass finds nothing new: a process may fork meanwhile.
	for found := true; found; {
		found = false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == m.Init.PID || stopped[pid] || nsOf(pid) != ns {
				continue
			}
			if st := procState(pid); st == 'T' || st == 't' || st == 'Z' || st == 0 {
				continue
			}
			unix.Kill(pid, unix.SIGSTOP)
			stopped[pid], found = true, true
		}
	}
	// SIGSTOP lands asynchronously; wait (briefly) until it has.
	deadline := time.Now().Add(time.Second)
	for pid := range stopped {
		for st := procState(pid); st != 'T' && st != 0 && st != 'Z' && time.Now().Before(deadline); st = procState(pid) {
			time.Sleep(time.Millisecond)
		}
	}
	return func() {
		for pid := range stopped {
			unix.Kill(pid, unix.SIGCONT)
		}
	}
}

// procState is the state letter of /proc/PID/stat (0 if the process is gone).
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// Clone copies src's layer into a new machine directory for dst.
func (r *Runtime) Clone(src, dst *state.Machine) error {
	from, to := r.layers(src), r.layers(dst)
	if err := os.MkdirAll(to.Dir, 0o755); err != nil {
		return err
	}
	// cp -a keeps owners, modes, xattrs (opaque dirs) and whiteout devices.
	if out, err := exec.Command("cp", "-a", from.Upper, to.Upper).CombinedOutput(); err != nil {
		return fmt.Errorf("copy layer: %v: %s", err, out)
	}
	os.MkdirAll(to.Work, 0o755)
	os.MkdirAll(to.Merged, 0o755)
	return nil
}

// Remove deletes a (stopped) machine's directory.
func (r *Runtime) Remove(m *state.Machine) error {
	return os.RemoveAll(r.Store.MachineDir(m.ID))
}

const metaName = "orbsim-machine.json"

// Export writes an archive of m (its record and its layer) to out. The
// reference documents no error texts for export/import; ours name the file
// and the cause (see docs/simulator.md).
func (r *Runtime) Export(m *state.Machine, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", out, errors.Unwrap(err))
	}
	// The record goes through a private directory: concurrent exports of
	// one machine must not share (and delete) each other's copy.
	meta, err := os.MkdirTemp(r.Store.Home, "export-")
	if err != nil {
		f.Close()
		return err
	}
	defer os.RemoveAll(meta)
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(meta, metaName), b, 0o600); err != nil {
		f.Close()
		return err
	}
	c := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-cf", "-",
		"-C", meta, metaName, "-C", r.Store.MachineDir(m.ID), "upper")
	var stderr strings.Builder
	c.Stdout, c.Stderr = f, &stderr
	err = c.Run()
	// GNU tar exits 1 when files changed while it read them: the machine is
	// running. The archive is complete, as a copy of a live disk would be.
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		err = nil
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cannot write %s: %w", out, errors.Unwrap(cerr))
	} else if err != nil {
		err = fmt.Errorf("tar: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		os.Remove(out)
	}
	return err
}

// Import unpacks an archive made by Export into the directory of m (a fresh
// record) and returns the record stored in the archive.
func (r *Runtime) Import(in string, m *state.Machine) (*state.Machine, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", in, errors.Unwrap(err))
	}
	defer f.Close()
	dir := r.Store.MachineDir(m.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-C", dir, "-xf", "-")
	c.Stdin = f
	if o, err := c.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s is not a machine archive made by orbctl export (tar: %s)", in, strings.TrimPrefix(strings.TrimSpace(strings.SplitN(string(o), "\n", 2)[0]), "tar: "))
	}
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	os.Remove(filepath.Join(dir, metaName))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s is not a machine archive made by orbctl export (no %s in it)", in, metaName)
	}
	var old state.Machine
	if err := json.Unmarshal(b, &old); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	os.MkdirAll(filepath.Join(dir, "work"), 0o755)
	os.MkdirAll(filepath.Join(dir, "merged"), 0o755)
	return &old, nil
}

// AddUserRunning adds user to a running machine, through its init's view of
// the root (both "layers" are the merged root there).
func (r *Runtime) AddUserRunning(m *state.Machine, user string) error {
	root := fmt.Sprintf("/proc/%d/root", m.Init.PID)
	return Layers{Base: root, Upper: root}.AddUser(user, AdminGroup(m.Distro))
}
