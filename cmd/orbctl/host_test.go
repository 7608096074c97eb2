//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// What a CI user meets besides the reference: host problems, host
// reboots, and commands racing each other.

// initPIDs reads the init PIDs the simulator recorded, by machine name.
func (s *sim) initPIDs() map[string]int {
	s.t.Helper()
	var st struct {
		Machines []struct {
			Name string `json:"name"`
			Init struct {
				PID int `json:"pid"`
			} `json:"init"`
		} `json:"machines"`
	}
	b, err := os.ReadFile(filepath.Join(s.home, "state.json"))
	require.NoError(s.t, err)
	require.NoError(s.t, json.Unmarshal(b, &st))
	pids := map[string]int{}
	for _, m := range st.Machines {
		pids[m.Name] = m.Init.PID
	}
	return pids
}

func TestHostProblems(t *testing.T) {
	t.Parallel()
	t.Run("an unusable ORBSIM_HOME is named, with what to do and no usage text", func(t *testing.T) {
		s := newSim(t).with("ORBSIM_HOME=/proc/orbsim-cannot-be-here")
		r := s.orbctl("list")
		assert.Equal(t, 1, r.Code)
		assert.Empty(t, r.Stdout)
		assert.Equal(t, "orbsim: cannot create ORBSIM_HOME /proc/orbsim-cannot-be-here: mkdir /proc/orbsim-cannot-be-here: no such file or directory; point ORBSIM_HOME at a writable directory\n", r.Stderr)
	})
	t.Run("a corrupt state file is named, with what to do", func(t *testing.T) {
		s := newSim(t)
		require.NoError(t, os.WriteFile(filepath.Join(s.home, "state.json"), []byte("{half"), 0o600))
		r := s.orbctl("list")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "orbsim: corrupt simulator state "+filepath.Join(s.home, "state.json"))
		assert.Contains(t, r.Stderr, "move it away to start afresh")
		assert.NotContains(t, r.Stderr, "Usage:")
		require.NoError(t, os.Remove(filepath.Join(s.home, "state.json"))) // for the cleanup's delete -a
	})
	t.Run("a machine whose files were removed by hand says so, and can be deleted", func(t *testing.T) {
		s := newSim(t)
		s.machine("gone")
		rec, _ := s.info("gone")
		s.ok("stop", "gone")
		require.NoError(t, os.RemoveAll(filepath.Join(s.home, "machines", rec.ID)))
		r := s.orbctl("start", "gone")
		assert.Equal(t, result{"", "[-32098] start 'gone': its files are gone (" + filepath.Join(s.home, "machines", rec.ID, "upper") +
			" was removed); delete the machine and create it again\n", 1}, r)
		s.ok("delete", "-f", "gone")
	})
	t.Run("a full disk", func(t *testing.T) {
		s := newSim(t)
		// A 2 MiB tmpfs as ORBSIM_HOME: room for two machines' layers (1 MiB was too tight to be reliable).
		home := filepath.Join(s.home, "small")
		require.NoError(t, os.Mkdir(home, 0o700))
		require.NoError(t, unix.Mount("orbsim-test", home, "tmpfs", 0, "size=2m"))
		full := s.with("ORBSIM_HOME=" + home)
		t.Cleanup(func() {
			full.run("orbctl", "delete", "-a", "-f")
			unix.Unmount(home, unix.MNT_DETACH)
		})
		full.machine("filler")
		full.machine("spare")
		r := full.orbctl("run", "-m", "filler", "-u", "root", "sh", "-c", "head -c 4000000 /dev/zero > /root/big")
		require.Equal(t, 1, r.Code, "the machine's own writes get ENOSPC: %+v", r)
		inits := countInits(home)

		t.Run("create fails before booting anything, naming the cause and the remedy", func(t *testing.T) {
			r := full.orbctl("create", "debian", "more")
			assert.Equal(t, 1, r.Code)
			assert.Equal(t, "orbsim: cannot save simulator state "+home+"/state.json: no space left on device; free space on the filesystem of ORBSIM_HOME="+home+" (machines' files live there too) and retry\n", r.Stderr)
			assert.Equal(t, inits, countInits(home), "no machine init left running without a record")
			assert.NotContains(t, full.ok("list", "-q"), "more")
		})
		t.Run("commands still run in running machines", func(t *testing.T) {
			assert.Equal(t, "spare\n", full.ok("run", "-m", "spare", "hostname"))
		})
		t.Run("stop still works", func(t *testing.T) {
			full.ok("stop", "spare")
			rec, _ := full.info("spare")
			assert.Equal(t, "stopped", rec.State)
		})
		t.Run("delete still works, and frees the room", func(t *testing.T) {
			full.ok("delete", "-f", "filler")
			full.machine("more")
			assert.ElementsMatch(t, []string{"spare", "more"}, strings.Fields(full.ok("list", "-q")))
		})
	})
}

// killPackageProxies kills the simulator's package proxies (docs/simulator.md,
// "Package access") in the network namespace of pid and waits until they
// are gone.
func killPackageProxies(pid int) {
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	entries, _ := os.ReadDir("/proc")
	var killed []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if theirs, _ := os.Readlink("/proc/" + e.Name() + "/ns/net"); theirs == ns && strings.Contains(string(b), "__orbsim-pkgproxy") {
			syscall.Kill(p, syscall.SIGKILL)
			killed = append(killed, p)
		}
	}
	for _, p := range killed {
		for i := 0; i < 200 && syscall.Kill(p, 0) == nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// countInits counts the running machine inits whose layers are under home.
func countInits(home string) int {
	out, _ := exec.Command("pgrep", "-f", "__orbsim-init .*"+home+"/machines/").Output()
	return len(strings.Fields(string(out)))
}

// A host reboot leaves the state file claiming running machines whose inits
// are gone, no orbsim0 bridge and an empty /run/orbsim. The test runs the
// simulator in its own mount and network namespaces (held open by a
// "holder" process) so it can take all of that away without touching the
// host's machines. Its ORBSIM_HOME has a space in its path, as macOS-style
// CI paths often do.
func TestHostReboot(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs util-linux unshare")
	}
	require.NoError(t, os.MkdirAll("/run/orbsim", 0o755))
	holder := exec.Command("unshare", "--mount", "--net", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs orbsim-test /run/orbsim && ip link set lo up && echo ready && exec sleep 600")
	out, err := holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, holder.Start())
	line, _ := bufio.NewReader(out).ReadString('\n')
	require.Equal(t, "ready\n", line, "namespace holder did not start")
	ns := strconv.Itoa(holder.Process.Pid)
	inNS := func(args ...string) *exec.Cmd {
		return exec.Command("nsenter", append([]string{"-t", ns, "-m", "-n", "--"}, args...)...)
	}
	home := filepath.Join(s.home, "with space")
	require.NoError(t, os.Mkdir(home, 0o700))
	booted := s.with("ORBSIM_HOME=" + home)
	booted.home = home
	orbctl := func(args ...string) result {
		cmd := inNS(append([]string{filepath.Join(binDir, "orbctl")}, args...)...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/root"}, booted.env...)
		cmd.Dir = "/"
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return result{o.String(), e.String(), code}
	}
	ok := func(args ...string) string {
		t.Helper()
		r := orbctl(args...)
		require.Equal(t, 0, r.Code, "orbctl %v: %+v", args, r)
		return r.Stdout
	}
	t.Cleanup(func() {
		orbctl("delete", "-a", "-f")
		killPackageProxies(holder.Process.Pid)
		holder.Process.Kill()
		holder.Wait()
	})

	ok("create", "debian", "r1")
	ok("create", "debian", "r2")
	ok("run", "-m", "r1", "-u", "root", "sh", "-c", "echo kept > /root/f")
	// The reboot: every init dies, the bridge and the /run registry go.
	for _, pid := range booted.initPIDs() {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}
	require.NoError(t, waitExit(booted.initPIDs()))
	killPackageProxies(holder.Process.Pid) // every process dies in a reboot
	o, err := inNS("sh", "-c", "ip link del orbsim0 && umount /run/orbsim && mount -t tmpfs orbsim-test /run/orbsim").CombinedOutput()
	require.NoError(t, err, string(o))

	t.Run("machines are reported stopped, without addresses", func(t *testing.T) {
		assert.Regexp(t, `(?m)^r1 +stopped .*\n^r2 +stopped `, ok("list"))
		var info map[string]any
		require.NoError(t, json.Unmarshal([]byte(ok("info", "-f", "json", "r1")), &info))
		assert.NotContains(t, info, "ip4")
	})
	t.Run("run boots the machine again with its files", func(t *testing.T) {
		assert.Equal(t, "kept\n", ok("run", "-m", "r1", "-u", "root", "cat", "/root/f"))
	})
	t.Run("start rebuilds the network: machines reach each other by name", func(t *testing.T) {
		ok("start", "r2")
		ok("run", "-m", "r1", "ping", "-c1", "-W2", "r2.orb.local")
	})
	t.Run("a registry wiped under running machines does not hand out their addresses again", func(t *testing.T) {
		o, err := inNS("sh", "-c", "rm -rf /run/orbsim/*").CombinedOutput()
		require.NoError(t, err, string(o))
		ok("create", "debian", "r4")
		ips := map[string]bool{}
		for _, name := range []string{"r1", "r2", "r4"} {
			var info map[string]any
			require.NoError(t, json.Unmarshal([]byte(ok("info", "-f", "json", name)), &info))
			ips[info["ip4"].(string)] = true
		}
		assert.Len(t, ips, 3, "three machines, three addresses")
		ok("run", "-m", "r1", "ping", "-c1", "-W2", "r2.orb.local")
		ok("run", "-m", "r4", "ping", "-c1", "-W2", "r1.orb.local")
	})
	t.Run("a bridge deleted under running machines comes back with them on it at the next start", func(t *testing.T) {
		o, err := inNS("ip", "link", "del", "orbsim0").CombinedOutput()
		require.NoError(t, err, string(o))
		ok("create", "debian", "r3")
		ok("run", "-m", "r1", "ping", "-c1", "-W2", "r2.orb.local")
		ok("run", "-m", "r3", "ping", "-c1", "-W2", "r1.orb.local")
	})
}

func waitExit(pids map[string]int) error {
	for name, pid := range pids {
		for i := 0; ; i++ {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			if i > 500 {
				return fmt.Errorf("init of %s (pid %d) did not die", name, pid)
			}
			unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
		}
	}
	return nil
}

// run and delete at once: a run that loses the race ends with the machine
// (128+SIGTERM, or 128+SIGKILL if it outlived the stop's grace) or finds no
// machine (a silent exit 1, as for any missing
// machine); it never fails on the half-gone machine (nsenter's "cannot open
// /proc/PID/ns/..." or the helper's refusal).
func TestDeleteRacingRuns(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	for round := 0; round < 4; round++ {
		name := fmt.Sprintf("race%d", round)
		s.machine(name)
		var wg sync.WaitGroup
		results := make(chan result, 10)
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- s.orbctl("run", "-m", name, "-w", "/", "true")
			}()
		}
		del := s.orbctl("delete", "-f", name)
		wg.Wait()
		close(results)
		assert.Equal(t, 0, del.Code, "delete: %+v", del)
		for r := range results {
			assert.Contains(t, []int{0, 1, 143, 137}, r.Code, "run exit code: %+v", r)
			assert.Empty(t, r.Stderr, "run stderr")
		}
		assert.NotContains(t, s.ok("list", "-q"), name)
	}
}

// An orbctl killed while it boots a machine (a CI job's timeout during
// create) can leave the machine's init running with no record of it. The
// next command that starts or deletes machines stops such orphans, so they
// neither pile up nor hold on to addresses.
func TestOrphanInitsAreStopped(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	orphaned := false
	for delay := 20 * time.Millisecond; delay < 400*time.Millisecond && !orphaned; delay += 15 * time.Millisecond {
		cmd := s.command("orbctl", "create", "debian", "victim")
		require.NoError(t, cmd.Start())
		time.Sleep(delay)
		cmd.Process.Kill()
		cmd.Wait()
		recorded := len(strings.Fields(s.ok("list", "-q", "-r")))
		orphaned = countInits(s.home) > recorded
		if !orphaned && recorded > 0 {
			s.ok("delete", "-f", "victim") // finished before the kill; try a shorter window
		}
	}
	if !orphaned {
		t.Skip("no kill landed between boot and save")
	}
	s.ok("delete", "-a", "-f")
	assert.Equal(t, 0, countInits(s.home), "delete -a leaves no init of this ORBSIM_HOME running")
}

// A CI job's temp-dir cleanup may remove ORBSIM_HOME without deleting the
// machines first; their inits then stop by themselves instead of running
// on, unreachable, until the host reboots.
func TestMachinesStopWhenORBSIMHOMEIsRemoved(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	home := filepath.Join(s.home, "doomed")
	doomed := s.with("ORBSIM_HOME=" + home)
	doomed.home = home
	doomed.machine("m1")
	doomed.ok("run", "-m", "m1", "sh", "-c", "nohup sleep 300 >/dev/null 2>&1 &")
	pid := doomed.initPIDs()["m1"]
	require.NoError(t, os.RemoveAll(home))
	eventually(t, "the machine's init exits", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

// Issue 2: state lives under $ORBSIM_HOME, by default ~/.orbsim.
func TestStateDefaultsToDotOrbsimInHome(t *testing.T) {
	t.Parallel()
	newSim(t) // every command but version needs isolation
	home := t.TempDir()
	orbctl := func(args ...string) string {
		cmd := exec.Command(filepath.Join(binDir, "orbctl"), args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
		out, err := cmd.Output()
		require.NoError(t, err, "orbctl %v", args)
		return string(out)
	}
	orbctl("config", "set", "k8s.enable", "true")
	assert.FileExists(t, filepath.Join(home, ".orbsim", "state.json"))
	assert.Equal(t, "true\n", orbctl("config", "get", "k8s.enable"), "a later invocation reads it back")
}
