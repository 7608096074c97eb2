//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reference §2 (create/list/info/delete/clone/rename/default/export/import/
// logs) and §3 (JSON shapes), against real machines.

type record struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Image struct {
		Distro, Version, Arch, Variant string
	} `json:"image"`
	Config struct {
		Isolated        bool   `json:"isolated"`
		DefaultUsername string `json:"default_username"`
	} `json:"config"`
	Builtin bool   `json:"builtin"`
	State   string `json:"state"`
}

func (s *sim) info(name string) (rec record, raw map[string]any) {
	s.t.Helper()
	out := s.ok("info", name, "-f", "json")
	var wrapped struct {
		Record record `json:"record"`
	}
	require.NoError(s.t, json.Unmarshal([]byte(out), &wrapped))
	require.NoError(s.t, json.Unmarshal([]byte(out), &raw))
	return wrapped.Record, raw
}

func TestCreate(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	t.Run("prints nothing when not on a TTY and leaves the machine running", func(t *testing.T) {
		r := s.orbctl("create", "debian:12", "web")
		assert.Equal(t, result{"", "", 0}, r)
		rec, _ := s.info("web")
		assert.Equal(t, "running", rec.State)
	})
	t.Run("resolves version aliases and records the image", func(t *testing.T) {
		rec, _ := s.info("web")
		assert.Equal(t, "debian", rec.Image.Distro)
		assert.Equal(t, "bookworm", rec.Image.Version)
		assert.Equal(t, "default", rec.Image.Variant)
		assert.Regexp(t, `^[0-9A-HJKMNP-TV-Z]{26}$`, rec.ID)
	})
	t.Run("the first machine becomes the default", func(t *testing.T) {
		assert.Equal(t, "web\n", s.ok("default"))
	})
	t.Run("a duplicate name is a server error", func(t *testing.T) {
		r := s.orbctl("create", "debian", "web")
		assert.Equal(t, result{"", "[-32098] create 'web': machine already exists: 'web'\n", 1}, r)
	})
	t.Run("the name defaults to the distro word; the image name is recorded", func(t *testing.T) {
		s.ok("create", "-a", "arm64", "arch")
		rec, _ := s.info("arch")
		assert.Equal(t, "archlinux", rec.Image.Distro)
		assert.Equal(t, "arm64", rec.Image.Arch)
	})
	t.Run("-u sets the default user, who has a home and passwordless sudo", func(t *testing.T) {
		s.machine("withuser", "-u", "alice")
		rec, _ := s.info("withuser")
		assert.Equal(t, "alice", rec.Config.DefaultUsername)
		assert.Equal(t, "alice\n/home/alice\n", s.ok("run", "-m", "withuser", "sh", "-c", "whoami; echo $HOME"))
		assert.Equal(t, "root\n", s.ok("run", "-m", "withuser", "sudo", "-n", "whoami"))
	})
	t.Run("without -u the default user is the Mac user (ORBSIM_MAC_USER)", func(t *testing.T) {
		rec, _ := s.info("web")
		assert.Equal(t, "dev", rec.Config.DefaultUsername)
		assert.Equal(t, "dev\n", s.ok("run", "-m", "web", "whoami"))
	})
	t.Run("root exists too", func(t *testing.T) {
		assert.Equal(t, "root /root\n", s.ok("run", "-m", "web", "-u", "root", "sh", "-c", `echo $(whoami) $HOME`))
	})
	t.Run("hostname is the machine name", func(t *testing.T) {
		assert.Equal(t, "web\n", s.ok("run", "-m", "web", "hostname"))
	})
	t.Run("a 64-character name, the hostname limit, is the hostname too", func(t *testing.T) {
		long := strings.Repeat("l", 64)
		s.machine(long)
		assert.Equal(t, long+"\n", s.ok("run", "-m", long, "hostname"))
	})
	t.Run("-p prompts for the user's password and sets it", func(t *testing.T) {
		r := s.runIn("s3cret\n", "orbctl", "create", "-p", "debian", "pw")
		assert.Equal(t, result{"", "Password for Linux user: ", 0}, r)
		assert.Equal(t, "dev\n", s.ok("run", "-m", "pw", "sh", "-c", "echo s3cret | su -c whoami dev 2>/dev/null"))
	})
	t.Run("-c with a shell script runs it once as root (cloud variant)", func(t *testing.T) {
		ud := t.TempDir() + "/ud"
		require.NoError(t, os.WriteFile(ud, []byte("#!/bin/sh\necho hello > /etc/from-user-data\n"), 0o644))
		s.ok("create", "-c", ud, "debian", "cloudy")
		rec, _ := s.info("cloudy")
		assert.Equal(t, "cloud", rec.Image.Variant)
		assert.Equal(t, "hello\n", s.ok("run", "-m", "cloudy", "cat", "/etc/from-user-data"))
	})
}

func TestListAndInfoShapes(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("one")
	s.machine("two")
	s.ok("stop", "two")

	t.Run("list -f json: field order of OrbStack's structs, 2-space indent, trailing newline", func(t *testing.T) {
		out := s.ok("list", "-f", "json")
		assert.Regexp(t, `^\[\n  \{\n    "id": "[0-9A-Z]{26}",\n    "name": "one",\n    "image": \{\n      "distro": "debian",\n      "version": "bookworm",\n      "arch": "(amd64|arm64)",\n      "variant": "default"\n    \},\n    "config": \{\n      "isolated": false,\n      "isolate_network": false,\n      "forward_ssh_agent": true,\n      "default_username": "dev"\n    \},\n    "builtin": false,\n    "state": "running"\n  \},`, out)
		assert.True(t, strings.HasSuffix(out, "}\n]\n"))
	})
	t.Run("before 2.1 config has only isolated and default_username", func(t *testing.T) {
		out := s.with("ORBSIM_VERSION=1.11.3").ok("list", "-f", "json")
		assert.Contains(t, out, "\"config\": {\n      \"isolated\": false,\n      \"default_username\": \"dev\"\n    },")
	})
	t.Run("list text prints a header only on a terminal", func(t *testing.T) {
		out := s.runTTY("", "list").Stdout
		assert.Regexp(t, `^NAME +STATE +DISTRO +VERSION +ARCH +SIZE +IP\n---- +----- +------ +------- +---- +---- +--\none +running`, out)
	})
	t.Run("list -r shows running machines, -q names only", func(t *testing.T) {
		assert.Equal(t, "one\n", s.ok("list", "-r", "-q"))
		assert.Equal(t, "one\ntwo\n", s.ok("list", "-q"))
	})
	t.Run("list text has no header when piped; SIZE and IP columns", func(t *testing.T) {
		out := s.ok("list")
		assert.Regexp(t, `^one  running  debian  bookworm  (amd64|arm64)  \d+(\.\d)? [kMG]?B +\d+\.\d+\.\d+\.\d+\ntwo  stopped  debian  bookworm  (amd64|arm64)  \d+(\.\d)? [kMG]?B +\n$`, out)
	})
	t.Run("info -f json of a running machine has record, disk_size, ip4 and ip6", func(t *testing.T) {
		_, raw := s.info("one")
		assert.Equal(t, []string{"record", "disk_size", "ip4", "ip6"}, orderedKeys(s.ok("info", "one", "-f", "json")))
		assert.IsType(t, float64(0), raw["disk_size"])
		assert.Regexp(t, `^\d+\.\d+\.\d+\.\d+$`, raw["ip4"])
		if raw["ip6"] != nil {
			assert.Regexp(t, `^fd07:b51a:cc66::[0-9a-f:]+$`, raw["ip6"], "canonical form")
		}
	})
	t.Run("info -f json of a stopped machine has no ip4", func(t *testing.T) {
		rec, raw := s.info("two")
		assert.Equal(t, "stopped", rec.State)
		assert.NotContains(t, raw, "ip4")
	})
	t.Run("info before 1.11.3 has no ip4", func(t *testing.T) {
		out := s.with("ORBSIM_VERSION=1.10.0").ok("info", "one", "-f", "json")
		assert.NotContains(t, out, "ip4")
		assert.Contains(t, out, `"disk_size": `)
	})
	t.Run("info before 1.10 prints the bare record", func(t *testing.T) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(s.with("ORBSIM_VERSION=1.9.0").ok("info", "one", "-f", "json")), &rec))
		assert.Equal(t, "one", rec["name"])
		assert.NotContains(t, rec, "record")
	})
	t.Run("info by ULID", func(t *testing.T) {
		rec, _ := s.info("one")
		again, _ := s.info(rec.ID)
		assert.Equal(t, "one", again.Name)
	})
	t.Run("info text", func(t *testing.T) {
		out := s.ok("info", "two")
		assert.Regexp(t, `^ID: [0-9A-Z]{26}\nName: two\nState: stopped\n\nDistro: debian\nVersion: bookworm\nArchitecture: (amd64|arm64)\n\nDisk usage: .+\n\n$`, out)
	})
}

func TestDelete(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("victim")
	rec, _ := s.info("victim")
	t.Run("delete by ULID panics with exit 2, like OrbStack 2.2.3", func(t *testing.T) {
		r := s.orbctl("delete", "-f", rec.ID)
		assert.Equal(t, 2, r.Code)
		assert.Contains(t, r.Stderr, "panic: runtime error: invalid memory address or nil pointer dereference")
		assert.Equal(t, "victim\n", s.ok("list", "-q"), "nothing was deleted")
	})
	t.Run("delete by name stops the machine and ends its processes", func(t *testing.T) {
		s.ok("run", "-m", "victim", "sh", "-c", "nohup sleep 777 >/dev/null 2>&1 &")
		s.ok("delete", "-f", "victim")
		assert.Equal(t, "", s.ok("list", "-q"))
		assert.False(t, hostHasProcess("sleep 777"), "the machine's processes must be gone")
	})
	t.Run("on a terminal delete asks, and anything but y aborts", func(t *testing.T) {
		s.machine("asked")
		r := s.runTTY("n\n", "delete", "asked")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stdout, "Continue [y/N]? ")
		assert.Contains(t, r.Stdout, "Aborted\n")
		assert.Contains(t, s.ok("list", "-q"), "asked")
		assert.Equal(t, 0, s.runTTY("y\n", "delete", "asked").Code)
		assert.NotContains(t, s.ok("list", "-q"), "asked")
	})
	t.Run("delete -a deletes everything", func(t *testing.T) {
		s.machine("d1")
		s.machine("d2")
		s.ok("delete", "-a", "-f")
		assert.Equal(t, "[]\n", s.ok("list", "-f", "json"))
	})
	t.Run("one missing name deletes nothing", func(t *testing.T) {
		s.machine("keep")
		r := s.orbctl("delete", "-f", "keep", "nope")
		assert.Equal(t, result{"", "[-32098] machine not found: 'nope'\n", 1}, r)
		assert.Equal(t, "keep\n", s.ok("list", "-q"))
	})
}

func hostHasProcess(cmdline string) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ") == cmdline {
			return true
		}
	}
	return false
}

func TestCloneRenameDefault(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("src")
	s.ok("run", "-m", "src", "sh", "-c", "echo cloned > ~/mark")
	t.Run("clone copies files; the clone is stopped", func(t *testing.T) {
		s.ok("clone", "src", "copy")
		rec, _ := s.info("copy")
		assert.Equal(t, "stopped", rec.State)
		assert.Equal(t, "cloned\n", s.ok("run", "-m", "copy", "-w", "", "cat", "mark"))
		assert.Equal(t, "copy\n", s.ok("run", "-m", "copy", "hostname"))
	})
	t.Run("clone into an existing name", func(t *testing.T) {
		assert.Equal(t, result{"", "[-32098] machine already exists: 'copy'\n", 1}, s.orbctl("clone", "src", "copy"))
	})
	t.Run("writes in a clone do not reach the source", func(t *testing.T) {
		s.ok("run", "-m", "copy", "sh", "-c", "echo changed > ~/mark")
		assert.Equal(t, "cloned\n", s.ok("run", "-m", "src", "-w", "", "cat", "mark"))
	})
	t.Run("cloning a busy machine pauses it: the copy succeeds, its processes go on after", func(t *testing.T) {
		s.machine("busy")
		churn := `mkdir -p /root/churn; for j in 1 2 3 4; do nohup sh -c 'while :; do for k in 1 2 3 4 5 6 7 8 9; do echo x > /root/churn/$$.$k; done; rm -f /root/churn/$$.*; done' >/dev/null 2>&1 & done`
		s.ok("run", "-m", "busy", "-u", "root", "sh", "-c", churn)
		for i := 0; i < 5; i++ {
			s.ok("clone", "busy", fmt.Sprintf("busy-copy%d", i))
		}
		states := s.ok("run", "-m", "busy", "ps", "-o", "stat=", "-C", "sh")
		assert.NotContains(t, states, "T", "no process left stopped")
		// 4 writers, plus any child one of them forked for rm just then.
		assert.GreaterOrEqual(t, len(strings.Fields(states)), 4, "the writers run on")
		s.ok("stop", "busy")
	})
	t.Run("rename keeps the ULID and the files", func(t *testing.T) {
		before, _ := s.info("copy")
		s.ok("rename", "copy", "renamed")
		after, _ := s.info("renamed")
		assert.Equal(t, before.ID, after.ID)
		assert.Equal(t, "changed\n", s.ok("run", "-m", "renamed", "-w", "", "cat", "mark"))
		assert.Equal(t, "renamed\n", s.ok("run", "-m", "renamed", "hostname"))
	})
	t.Run("rename to the same name is a no-op", func(t *testing.T) {
		assert.Equal(t, result{"", "", 0}, s.orbctl("rename", "renamed", "renamed"))
	})
	t.Run("rename into an existing name quotes it with %q", func(t *testing.T) {
		assert.Equal(t, result{"", "[-32098] machine '\"src\"' already exists\n", 1}, s.orbctl("rename", "renamed", "src"))
	})
	t.Run("default get, set, and none (2.x)", func(t *testing.T) {
		assert.Equal(t, "src\n", s.ok("default"))
		s.ok("default", "renamed")
		assert.Equal(t, "renamed\n", s.ok("default"))
		assert.Equal(t, "renamed\n", s.ok("run", "hostname"), "run without -m uses the default")
		s.ok("default", "none")
		assert.Equal(t, "src\n", s.ok("default"), "with none set, the first machine is picked")
		assert.Equal(t, result{"", "[-32098] machine not found: 'nope'\n", 1}, s.orbctl("default", "nope"))
	})
}

func TestExportImport(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("orig")
	s.ok("run", "-m", "orig", "-u", "root", "sh", "-c", "echo kept > /etc/exported; rm /etc/issue")
	archive := t.TempDir() + "/orig.tar.zst"
	s.ok("export", "orig", archive)
	s.ok("import", "-n", "restored", archive)
	t.Run("import restores files and deletions", func(t *testing.T) {
		rec, _ := s.info("restored")
		assert.Equal(t, "stopped", rec.State)
		assert.Equal(t, "kept\n", s.ok("run", "-m", "restored", "cat", "/etc/exported"))
		assert.Equal(t, 1, s.orbctl("run", "-m", "restored", "test", "-e", "/etc/issue").Code)
	})
	t.Run("import under an existing name", func(t *testing.T) {
		assert.Equal(t, result{"", "[-32098] machine already exists: 'orig'\n", 1}, s.orbctl("import", archive))
	})
	t.Run("a relative output path is made absolute", func(t *testing.T) {
		elsewhere := *s
		elsewhere.dir = t.TempDir()
		elsewhere.ok("export", "orig", "rel.tar")
		_, err := os.Stat(elsewhere.dir + "/rel.tar")
		assert.NoError(t, err)
	})
	t.Run("concurrent exports of one machine all succeed", func(t *testing.T) {
		dir := t.TempDir()
		done := make(chan result)
		for i := 0; i < 4; i++ {
			go func() { done <- s.orbctl("export", "orig", fmt.Sprintf("%s/%d.tar", dir, i)) }()
		}
		for i := 0; i < 4; i++ {
			assert.Equal(t, result{"", "", 0}, <-done)
		}
	})
	// The reference gives no text for these; ours name the file and the cause.
	t.Run("export to a directory that does not exist names the path", func(t *testing.T) {
		assert.Equal(t, result{"", "[-32098] export 'orig': cannot write /nonexistent/x.tar: no such file or directory\n", 1},
			s.orbctl("export", "orig", "/nonexistent/x.tar"))
	})
	t.Run("import of a missing file names it", func(t *testing.T) {
		assert.Equal(t, result{"", "[-32098] import: cannot read /nonexistent.tar: no such file or directory\n", 1},
			s.orbctl("import", "/nonexistent.tar"))
	})
	t.Run("import of something else says it is not a machine archive", func(t *testing.T) {
		junk := t.TempDir() + "/junk.tar"
		require.NoError(t, os.WriteFile(junk, []byte("not a tar file at all\n"), 0o644))
		r := s.orbctl("import", junk)
		assert.Equal(t, 1, r.Code)
		assert.True(t, strings.HasPrefix(r.Stderr, "[-32098] import: "+junk+" is not a machine archive made by orbctl export ("), r.Stderr)
		assert.NotContains(t, s.ok("list", "-q"), "junk")
	})
}

func TestLogs(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("logged")
	assert.Regexp(t, regexp.MustCompile(`\[orbsim\] logged: started at `), s.ok("logs", "logged"))
}

func TestOrbMode(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("box")
	t.Run("orb CMD runs a Linux command", func(t *testing.T) {
		r := s.run("orb", "uname", "-n")
		assert.Equal(t, result{"box\n", "", 0}, r)
	})
	t.Run("orb with run flags", func(t *testing.T) {
		assert.Equal(t, "root\n", s.run("orb", "-m", "box", "-u", "root", "whoami").Stdout)
	})
	t.Run("orb SUBCOMMAND is orbctl", func(t *testing.T) {
		assert.Equal(t, "box\n", s.run("orb", "list", "-q").Stdout)
	})
	t.Run("only the first argument is checked: orb -m box info runs Linux info", func(t *testing.T) {
		assert.Equal(t, 127, s.run("orb", "-m", "box", "info").Code)
	})
	t.Run("any other argv[0] runs that command in Linux", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "hostname")
		require.NoError(t, os.Symlink(filepath.Join(binDir, "orbctl"), link))
		cmd := s.command("orbctl")
		cmd.Path, cmd.Args = link, []string{link}
		out, err := cmd.Output()
		require.NoError(t, err)
		assert.Equal(t, "box\n", string(out))
	})
	t.Run("passes stdin", func(t *testing.T) {
		assert.Equal(t, "piped\n", s.runIn("piped\n", "orb", "cat").Stdout)
	})
}

func TestStatePersistsAcrossInvocationsAndCrashes(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	s.machine("sturdy")
	s.ok("run", "-m", "sturdy", "sh", "-c", "echo data > ~/f")
	// Kill the machine's init behind the simulator's back (a crash or reboot).
	var st struct {
		Machines []struct {
			Init struct {
				PID int `json:"pid"`
			} `json:"init"`
		} `json:"machines"`
	}
	b, err := os.ReadFile(s.home + "/state.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &st))
	require.NoError(t, syscall.Kill(st.Machines[0].Init.PID, syscall.SIGKILL))
	eventually(t, "machine reported stopped", func() bool {
		rec, _ := s.info("sturdy")
		return rec.State == "stopped"
	})
	assert.Equal(t, "data\n", s.ok("run", "-m", "sturdy", "-w", "", "cat", "f"), "run restarts it with its files")
}

// orderedKeys lists the top-level keys of a JSON object in document order.
func orderedKeys(doc string) []string {
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.Token() // {
	var keys []string
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	return keys
}

// A per-distro rootfs (ORBSIM_ROOTFS_<DISTRO>) replaces the host's root as
// the machine's base layer.
func TestRootfsKnob(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	rootfs := t.TempDir()
	// A tiny userland: dash and the libraries it links.
	files := []string{"/bin/sh", "/bin/dash"}
	out, err := newCmd("ldd", "/bin/dash").Output()
	require.NoError(t, err)
	for _, f := range regexp.MustCompile(`(/\S+\.so[.\d]*)`).FindAllString(string(out), -1) {
		files = append(files, f)
	}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		require.NoError(t, err)
		b, err := os.ReadFile(real)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(rootfs, filepath.Dir(f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(rootfs, f), b, 0o755))
	}
	require.NoError(t, os.MkdirAll(rootfs+"/etc", 0o755))
	require.NoError(t, os.WriteFile(rootfs+"/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644))
	require.NoError(t, os.WriteFile(rootfs+"/etc/group", []byte("root:x:0:\n"), 0o644))
	require.NoError(t, os.WriteFile(rootfs+"/etc/os-release", []byte("ID=tiny\n"), 0o644))

	alpine := s.with("ORBSIM_ROOTFS_ALPINE=" + rootfs)
	alpine.ok("create", "alpine", "tiny")
	r := alpine.orbctl("run", "-m", "tiny", "-w", "", "sh", "-c", `read l < /etc/os-release; echo "$l $(pwd)"`)
	assert.Equal(t, result{"ID=tiny /home/dev\n", "", 0}, r, "the base is the rootfs; the user was added to it")
	_, err = os.Stat(rootfs + "/home/dev")
	assert.True(t, os.IsNotExist(err), "the rootfs itself is never written")

	bad := s.with("ORBSIM_ROOTFS_ALPINE=/nonexistent")
	assert.Equal(t, result{"", "[-32098] create 'tiny2': make rootfs: ORBSIM_ROOTFS_ALPINE=/nonexistent is not a directory\n", 1}, bad.orbctl("create", "alpine", "tiny2"))
}
