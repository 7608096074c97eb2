//go:build linux

// Package guest is the code that runs inside a machine: the machine's PID 1
// (InitMain) and the per-command helper that switches to the user and runs the
// command through their login shell (ExecMain). Both are the simulator binary
// itself, re-executed under hidden subcommands, so a machine needs nothing
// from its root filesystem to boot.
package guest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// InitCommand and ExecCommand are the hidden subcommands (argv[1]).
const (
	InitCommand = "__orbsim-init"
	ExecCommand = "__orbsim-exec"
)

// InitSpec tells a machine's init how to build its root.
type InitSpec struct {
	Name     string   `json:"name"`
	Lower    string   `json:"lower"`
	Upper    string   `json:"upper"`
	Work     string   `json:"work"`
	Merged   string   `json:"merged"`
	MacMount bool     `json:"mac_mount"` // bind the host's root at /mnt/mac
	Mounts   []string `json:"mounts"`    // HOST:GUEST binds
}

// InitMain is PID 1 of a machine. It is started by the host already inside
// fresh mount, PID, UTS, network and IPC namespaces. It builds the root,
// reports "ok" (or the error) on fd 3, then reaps orphans until SIGTERM.
// When it exits the kernel kills every process left in the PID namespace,
// which is what makes `orbctl stop` end all of a machine's processes.
func InitMain(specJSON string) int {
	ready := os.NewFile(3, "ready")
	var spec InitSpec
	err := json.Unmarshal([]byte(specJSON), &spec)
	var machineDir *os.File
	if err == nil {
		// Held open from before pivot_root: see machineDirGone. (An inotify
		// IN_DELETE_SELF watch would not fire: overlayfs pins the directory's
		// children, so its inode outlives the rmdir until the machine stops.)
		// Root in the machine can reach the host through this descriptor, as
		// it can through mknod or mount: machines are not a security boundary.
		machineDir, err = os.Open(filepath.Dir(spec.Upper))
	}
	if err == nil {
		err = buildRoot(spec)
	}
	if err != nil {
		fmt.Fprintf(ready, "%v", err)
		fmt.Fprintf(os.Stderr, "[orbsim] %s: boot failed: %v\n", spec.Name, err)
		return 1
	}
	// Receivers only: set up before reporting ready so no SIGTERM is missed.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGCHLD, unix.SIGINT, unix.SIGHUP)
	fmt.Fprintf(os.Stdout, "[orbsim] %s: started at %s\n", spec.Name, time.Now().UTC().Format(time.RFC3339))
	ready.WriteString("ok")
	ready.Close()
	tick := time.NewTicker(machineDirCheck)
wait:
	for {
		select {
		case s := <-sigs:
			if s == unix.SIGCHLD {
				reap()
			} else if s == unix.SIGTERM || s == unix.SIGINT {
				break wait
			}
		case <-tick.C:
			if machineDirGone(machineDir) {
				fmt.Fprintf(os.Stdout, "[orbsim] %s: its directory was deleted (ORBSIM_HOME removed?)\n", spec.Name)
				break wait
			}
		}
	}
	fmt.Fprintf(os.Stdout, "[orbsim] %s: stopping at %s\n", spec.Name, time.Now().UTC().Format(time.RFC3339))
	unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			break
		}
		if pid <= 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return 0
}

// machineDirCheck is how often an init checks that its machine still exists.
const machineDirCheck = time.Second

// machineDirGone reports whether the machine's directory was deleted (its
// link count drops to 0), as when a CI job's temp-dir cleanup removes
// ORBSIM_HOME without `orbctl delete`. The machine then stops by itself
// instead of running on, unreachable, until the host reboots.
func machineDirGone(dir *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(dir.Fd()), &st) == nil && st.Nlink == 0
}

func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

func buildRoot(s InitSpec) error {
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := step("make mounts private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", s.Lower, s.Upper, s.Work)
	if err := step("mount overlay (is overlayfs available?)", unix.Mount("overlay", s.Merged, "overlay", 0, opts)); err != nil {
		return err
	}
	m := s.Merged
	mkdir := func(p string, mode os.FileMode) { os.MkdirAll(filepath.Join(m, p), mode) }
	mkdir("proc", 0o555)
	if err := step("mount /proc", unix.Mount("proc", m+"/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")); err != nil {
		return err
	}
	mkdir("sys", 0o555)
	// Read-only: a deploy must not retune the host kernel through /sys.
	if err := step("mount /sys", unix.Mount("sysfs", m+"/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")); err != nil {
		return err
	}
	if err := buildDev(m + "/dev"); err != nil {
		return step("populate /dev", err)
	}
	mkdir("run", 0o755)
	if err := step("mount /run", unix.Mount("tmpfs", m+"/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755")); err != nil {
		return err
	}
	os.Mkdir(m+"/run/lock", 0o1777)
	os.Chmod(m+"/run/lock", 0o1777)
	// /tmp is a tmpfs, as in OrbStack (§10, garm on 2.2.3): it is empty
	// after a stop, and a clone does not copy it.
	mkdir("tmp", 0o1777)
	if err := step("mount /tmp", unix.Mount("tmpfs", m+"/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")); err != nil {
		return err
	}
	if s.MacMount {
		mkdir("mnt/mac", 0o755)
		if err := step("bind the host root at /mnt/mac", unix.Mount("/", m+"/mnt/mac", "", unix.MS_BIND, "")); err != nil {
			return err
		}
	}
	for _, spec := range s.Mounts {
		host, guest, ok := strings.Cut(spec, ":")
		if !ok {
			continue
		}
		target := filepath.Join(m, guest)
		if fi, err := os.Stat(host); err == nil && !fi.IsDir() {
			os.MkdirAll(filepath.Dir(target), 0o755)
			if f, err := os.OpenFile(target, os.O_CREATE, 0o644); err == nil {
				f.Close()
			}
		} else {
			os.MkdirAll(target, 0o755)
		}
		if err := step("bind mount "+spec, unix.Mount(host, target, "", unix.MS_BIND|unix.MS_REC, "")); err != nil {
			return err
		}
	}
	if err := step("chdir to new root", unix.Chdir(m)); err != nil {
		return err
	}
	if err := step("pivot_root", unix.PivotRoot(".", ".")); err != nil {
		return err
	}
	if err := step("detach old root", unix.Unmount(".", unix.MNT_DETACH)); err != nil {
		return err
	}
	unix.Chdir("/")
	if err := step("set hostname", unix.Sethostname([]byte(s.Name))); err != nil {
		return err
	}
	// Real distros (systemd) let every group use ICMP sockets, so an
	// unprivileged `ping` works; the kernel default in a new netns is "1 0".
	os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0o644)
	return nil
}

func buildDev(dev string) error {
	os.MkdirAll(dev, 0o755)
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		f, err := os.OpenFile(filepath.Join(dev, n), os.O_CREATE, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount("/dev/"+n, filepath.Join(dev, n), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	os.Mkdir(dev+"/pts", 0o755)
	if err := unix.Mount("devpts", dev+"/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	os.Symlink("pts/ptmx", dev+"/ptmx")
	os.Mkdir(dev+"/shm", 0o1777)
	if err := unix.Mount("tmpfs", dev+"/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	os.Symlink("/proc/self/fd", dev+"/fd")
	os.Symlink("/proc/self/fd/0", dev+"/stdin")
	os.Symlink("/proc/self/fd/1", dev+"/stdout")
	os.Symlink("/proc/self/fd/2", dev+"/stderr")
	return nil
}
