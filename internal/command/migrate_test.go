//go:build linux

package command

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// These tests run the built binary (make build) as the controller and, through
// a fake ssh, as each Mac's end: two simulator homes (mac-a, mac-b), each with
// its own TMPDIR so that leftover archives show.

// fakeSSH takes ssh's argv (…, DESTINATION, REMOTE_COMMAND), picks the Mac's
// directory by DESTINATION and runs the command with sh -c, as sshd would,
// with that Mac's simulator home, TMPDIR and orbctl. In the Mac's directory,
// a file "cut" holding N ends an export-stream session after N bytes of
// stdout (a dropped link, exit 255), and a file "slow" sends its stdout
// through a throttle.
const fakeSSH = `#!/bin/sh
for a; do host=$cmd; cmd=$a; done
dir=$FAKESSH_ROOT/$host
[ -d "$dir" ] || { echo "ssh: Could not resolve hostname $host: Name or service not known" >&2; exit 255; }
export ORBSIM_HOME=$dir/orbsim TMPDIR=$dir/tmp PATH=$FAKESSH_BIN:$PATH
if [ -x "$dir/orbctl" ]; then export PYINFRA_ORBSTACK_ORBCTL=$dir/orbctl; else export PYINFRA_ORBSTACK_ORBCTL=$FAKESSH_ORBCTL; fi
case $cmd in *export-stream*) ;; *) exec sh -c "$cmd" ;; esac
if [ -f "$dir/cut" ]; then
  sh -c "$cmd" | head -c "$(cat "$dir/cut")"
  echo "Connection to $host closed by remote host." >&2; exit 255
fi
if [ -f "$dir/slow" ]; then
  sh -c "$cmd" | GO_WANT_SLOWCAT=1 "$FAKESSH_SLOWCAT" -test.run='^TestHelperSlowCat$'
  exit
fi
exec sh -c "$cmd"
`

// TestHelperSlowCat is the fake ssh's throttle (16 KiB per 50 ms), not a test.
func TestHelperSlowCat(t *testing.T) {
	if os.Getenv("GO_WANT_SLOWCAT") == "" {
		return
	}
	buf := make([]byte, 16<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			if _, werr := os.Stdout.Write(buf[:n]); werr != nil {
				os.Exit(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

type twoMacs struct {
	t         *testing.T
	root, bin string
	orbctl    string
	env       []string
}

func newTwoMacs(t *testing.T) *twoMacs {
	repo := orbctltest.RepoRoot()
	w := &twoMacs{t: t, bin: filepath.Join(repo, "bin", "pyinfra-orbstack"), orbctl: filepath.Join(repo, "bin", "orbctl")}
	for _, p := range []string{w.bin, w.orbctl} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not built (run make build)", p)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the simulator's machines need root")
	}
	w.root = t.TempDir()
	for _, d := range []string{"mac-a/orbsim", "mac-a/tmp", "mac-b/orbsim", "mac-b/tmp", "ctl/tmp", "ctl/orbsim"} {
		if err := os.MkdirAll(filepath.Join(w.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ssh := filepath.Join(w.root, "ssh")
	if err := os.WriteFile(ssh, []byte(fakeSSH), 0o755); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	w.env = append(os.Environ(), "PYINFRA_ORBSTACK_SSH="+ssh, "FAKESSH_ROOT="+w.root, "FAKESSH_BIN="+filepath.Dir(w.bin),
		"FAKESSH_ORBCTL="+w.orbctl, "FAKESSH_SLOWCAT="+self, "ORBSIM_MAC_USER=dev",
		"TMPDIR="+filepath.Join(w.root, "ctl/tmp"), "ORBSIM_HOME="+filepath.Join(w.root, "ctl/orbsim"),
		"PYINFRA_ORBSTACK_ORBCTL="+w.orbctl)
	t.Cleanup(func() {
		for _, mac := range []string{"mac-a", "mac-b", "ctl"} {
			for _, name := range strings.Fields(w.sim(mac, "list", "-q")) {
				w.sim(mac, "delete", "-f", name)
			}
		}
	})
	return w
}

// sim runs the simulator's orbctl on one Mac and returns its stdout.
func (w *twoMacs) sim(mac string, args ...string) string {
	cmd := exec.Command(w.orbctl, args...)
	cmd.Env = append(w.env, "ORBSIM_HOME="+filepath.Join(w.root, mac, "orbsim"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		w.t.Logf("orbctl %v on %s: %v: %s", args, mac, err, stderr.String())
	}
	return string(out)
}

// wrapOrbctl gives a Mac an orbctl that runs script for one subcommand
// ($1) and the simulator for the others ($FAKESSH_ORBCTL).
func (w *twoMacs) wrapOrbctl(mac, sub, script string) {
	body := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = %s ]; then\n%s\nfi\nexec \"$FAKESSH_ORBCTL\" \"$@\"\n", sub, script)
	if err := os.WriteFile(filepath.Join(w.root, mac, "orbctl"), []byte(body), 0o755); err != nil {
		w.t.Fatal(err)
	}
}

func (w *twoMacs) set(mac, file, content string) {
	if err := os.WriteFile(filepath.Join(w.root, mac, file), []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// machine creates web on mac-a with 2 MiB of random data, and returns its
// info and the data's sha256.
func (w *twoMacs) machine(state string) (map[string]any, string) {
	w.sim("mac-a", "create", "debian", "web")
	w.sim("mac-a", "run", "-m", "web", "-u", "root", "sh", "-c", "head -c 2097152 /dev/urandom > /srv/data")
	sum := w.sim("mac-a", "run", "-m", "web", "-u", "root", "sha256sum", "/srv/data")
	if state == "stopped" {
		w.sim("mac-a", "stop", "web")
	}
	return w.info("mac-a", "web"), sum
}

func (w *twoMacs) info(mac, name string) map[string]any {
	var m map[string]any
	out := w.sim(mac, "info", name, "-f", "json")
	if out == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		w.t.Fatalf("info %s on %s: %v: %s", name, mac, err, out)
	}
	if r, ok := m["record"].(map[string]any); ok {
		return r
	}
	return m
}

// migrate runs the controller and returns its exit status, stdout, stderr.
func (w *twoMacs) migrate(args ...string) (int, string, string) {
	cmd := exec.Command(w.bin, append([]string{"machine", "migrate"}, args...)...)
	cmd.Env = w.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	w.t.Logf("migrate %v: %s: %s%s", args, time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// untouched checks that web is on mac-a as it was, that mac-b has no
// machine, and that no Mac has a temp file left (waiting a little: a cut
// side cleans up after the controller has returned).
func (w *twoMacs) untouched(before map[string]any, sum string) {
	w.t.Helper()
	w.noTempFiles()
	after := w.info("mac-a", "web")
	if after == nil || after["id"] != before["id"] || after["state"] != before["state"] {
		w.t.Errorf("web on mac-a changed: before %v, after %v", before, after)
	}
	if got := w.sim("mac-b", "list", "-q"); got != "" {
		w.t.Errorf("mac-b has machines: %q", got)
	}
	if before["state"] == "running" {
		if got := w.sim("mac-a", "run", "-m", "web", "-u", "root", "sha256sum", "/srv/data"); got != sum {
			w.t.Errorf("web's data on mac-a: %q, was %q", got, sum)
		}
	}
}

func (w *twoMacs) noTempFiles() {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var left []string
		for _, mac := range []string{"mac-a", "mac-b", "ctl"} {
			entries, _ := os.ReadDir(filepath.Join(w.root, mac, "tmp"))
			for _, e := range entries {
				left = append(left, mac+"/"+e.Name())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			w.t.Errorf("temp files left: %v", left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestMigrateMovesARunningMachine(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("running")
	code, out, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b", "--check", "/srv/data")
	if code != 0 || !strings.HasPrefix(out, "migrated web from mac-a to mac-b (") {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	got := w.info("mac-b", "web")
	if got == nil || got["state"] != "running" {
		t.Fatalf("web on mac-b: %v", got)
	}
	if data := w.sim("mac-b", "run", "-m", "web", "-u", "root", "sha256sum", "/srv/data"); data != sum {
		t.Fatalf("data on mac-b %q, on mac-a %q", data, sum)
	}
	if a := w.info("mac-a", "web"); a == nil || a["id"] != before["id"] || a["state"] != "running" {
		t.Fatalf("web on mac-a: %v", a)
	}
	w.noTempFiles()
	// Again: it exists there now.
	code, _, errOut = w.migrate("web", "--from", "mac-a", "--to", "mac-b")
	if code != ExitMachineExists || !strings.Contains(errOut, "web already exists on Mac mac-b") {
		t.Fatalf("second migrate: exit %d, %q", code, errOut)
	}
}

func TestMigrateStoppedMachineWithDeleteSource(t *testing.T) {
	w := newTwoMacs(t)
	w.machine("stopped")
	code, out, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b", "--delete-source")
	if code != 0 || !strings.Contains(out, "stopped;") || !strings.Contains(out, "deleted web on mac-a") {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	if got := w.info("mac-b", "web"); got == nil || got["state"] != "stopped" {
		t.Fatalf("web on mac-b: %v", got)
	}
	if got := w.sim("mac-a", "list", "-q"); got != "" {
		t.Fatalf("mac-a still has %q", got)
	}
	w.noTempFiles()
}

func TestMigrateFromThisMac(t *testing.T) {
	w := newTwoMacs(t)
	w.sim("ctl", "create", "debian", "web")
	code, out, errOut := w.migrate("web", "--from", "local", "--to", "mac-b", "--delete-source")
	if code != 0 || !strings.Contains(out, "migrated web from this Mac to mac-b") {
		t.Fatalf("exit %d, %q, %q", code, out, errOut)
	}
	if w.info("mac-b", "web") == nil || w.sim("ctl", "list", "-q") != "" {
		t.Fatalf("mac-b: %v, here: %q", w.info("mac-b", "web"), w.sim("ctl", "list", "-q"))
	}
	w.noTempFiles()
}

func TestMigrateRefusals(t *testing.T) {
	w := newTwoMacs(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ghost", "--from", "mac-a", "--to", "mac-b"}, ExitMachineNotFound, "ghost is not on Mac mac-a"},
		{[]string{"web", "--from", "mac-a", "--to", "mac-a"}, ExitUsage, "same Mac"},
		{[]string{"web", "--from", "local", "--to", ""}, ExitUsage, "--from and --to are required"},
		{[]string{"web", "--from", "mac-a", "--to", "-oProxyCommand=x"}, ExitUsage, "must not start with"},
		{[]string{"web", "--from", "mac-a", "--to", "mac-b", "--check", "etc/passwd"}, ExitUsage, "absolute path"},
		{[]string{"web", "--from", "nowhere", "--to", "mac-b"}, ExitMacUnreachable, "cannot reach Mac nowhere"},
	} {
		code, _, errOut := w.migrate(c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", c.args, code, errOut, c.code, c.want)
		}
	}
}

func TestMigrateExportFailsOnSource(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("running")
	// A failed export that left a partial file behind.
	w.wrapOrbctl("mac-a", "export", `echo partial > "$3"; echo "[-32098] export 'web': no space left on device" >&2; exit 1`)
	code, _, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b")
	if code != ExitFailure || !strings.Contains(errOut, "export on Mac mac-a failed: [-32098] export 'web': no space left on device") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	w.untouched(before, sum)
}

func TestMigrateStreamCutMidway(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("running")
	w.set("mac-a", "cut", "300000")
	code, _, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b")
	if code != ExitMacUnreachable || !strings.Contains(errOut, "transfer from Mac mac-a to Mac mac-b failed: the stream from Mac mac-a stopped after") ||
		!strings.Contains(errOut, "closed by remote host") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	os.Remove(filepath.Join(w.root, "mac-a", "cut"))
	w.untouched(before, sum)
}

func TestMigrateImportFailsOnDestination(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("stopped")
	// orbctl import that makes the machine, then fails anyway.
	w.wrapOrbctl("mac-b", "import", `"$FAKESSH_ORBCTL" "$@"; echo "[-32098] import: disk image corrupt" >&2; exit 1`)
	code, _, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b", "--delete-source")
	if code != ExitFailure || !strings.Contains(errOut, "import on Mac mac-b failed: [-32098] import: disk image corrupt") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	w.untouched(before, sum)
}

func TestMigrateVerificationMismatch(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("running")
	// An import whose machine differs from the source in /etc/group.
	w.wrapOrbctl("mac-b", "import", `"$FAKESSH_ORBCTL" "$@" || exit
"$FAKESSH_ORBCTL" run -m "$3" -u root sh -c 'echo intruder:x:999: >> /etc/group'; exit 0`)
	code, _, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b", "--delete-source")
	if code != ExitFailure || !strings.Contains(errOut, "verification on Mac mac-b failed: the imported machine's files differ from the source's: /etc/group") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	w.untouched(before, sum)
}

func TestMigrateControllerKilledMidTransfer(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("running")
	w.set("mac-a", "slow", "")
	w.killController(syscall.SIGKILL, func() bool { return partial(filepath.Join(w.root, "mac-b", "tmp")) })
	os.Remove(filepath.Join(w.root, "mac-a", "slow"))
	w.untouched(before, sum)
}

func TestMigrateControllerInterruptedMidTransfer(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("stopped")
	w.set("mac-a", "slow", "")
	out := w.killController(syscall.SIGTERM, func() bool { return partial(filepath.Join(w.root, "mac-b", "tmp")) })
	if !strings.Contains(out, "migrating web: transfer from Mac mac-a to Mac mac-b failed: interrupted after") {
		t.Errorf("output: %q", out)
	}
	os.Remove(filepath.Join(w.root, "mac-a", "slow"))
	w.untouched(before, sum)
}

// Once the destination has every byte, it finishes without the controller.
func TestMigrateControllerKilledDuringTheImportLeavesItFinished(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("running")
	marker := filepath.Join(w.root, "mac-b", "importing")
	w.wrapOrbctl("mac-b", "import", `touch "$FAKESSH_ROOT/mac-b/importing"; sleep 1; exec "$FAKESSH_ORBCTL" "$@"`)
	w.killController(syscall.SIGKILL, func() bool { _, err := os.Stat(marker); return err == nil })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := w.info("mac-b", "web"); m != nil && m["state"] == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web never arrived on mac-b: %q", w.sim("mac-b", "list"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.noTempFiles()
	if got := w.sim("mac-b", "list", "-q"); got != "web\n" {
		t.Fatalf("mac-b has %q", got)
	}
	if data := w.sim("mac-b", "run", "-m", "web", "-u", "root", "sha256sum", "/srv/data"); data != sum {
		t.Fatalf("data on mac-b %q, on mac-a %q", data, sum)
	}
	if a := w.info("mac-a", "web"); a == nil || a["id"] != before["id"] {
		t.Fatalf("web on mac-a: %v", a)
	}
}

// killController starts a migration of web from mac-a to mac-b, sends sig
// once ready() holds, and returns the controller's output.
func (w *twoMacs) killController(sig syscall.Signal, ready func() bool) string {
	w.t.Helper()
	cmd := exec.Command(w.bin, "machine", "migrate", "web", "--from", "mac-a", "--to", "mac-b")
	cmd.Env = w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			w.t.Fatalf("the migration never got there: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		w.t.Fatal(err)
	}
	cmd.Wait()
	return out.String()
}

// partial reports whether an import temp dir under tmp holds a non-empty file.
func partial(tmp string) bool {
	dirs, _ := filepath.Glob(filepath.Join(tmp, "pyinfra-orbstack-import-*", "*"))
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.Size() > 0 {
			return true
		}
	}
	return false
}

func TestMachineWhereLooksOnEveryMac(t *testing.T) {
	w := newTwoMacs(t)
	w.sim("mac-b", "create", "debian", "web")
	cmd := exec.Command(w.bin, "machine", "where", "web", "--mac", "local", "--mac", "mac-b", "--mac", "mac-a", "--json")
	cmd.Env = w.env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got) != 3 || got["local"] != nil || got["mac-a"] != nil || got["mac-b"]["state"] != "running" ||
		got["mac-b"]["config"].(map[string]any)["default_username"] != "dev" {
		t.Fatalf("where: %s", out)
	}
	if !strings.HasPrefix(string(out), "{\n  \"local\": null,\n  \"mac-b\": {") {
		t.Fatalf("not in the order given: %s", out)
	}
	cmd = exec.Command(w.bin, "machine", "where", "web", "--mac", "mac-b", "--mac", "nowhere")
	cmd.Env = w.env
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != ExitMacUnreachable || !strings.Contains(string(out), "cannot reach Mac nowhere") {
		t.Fatalf("unreachable Mac: %v: %s", err, out)
	}
}

func TestMigrateMissingCheckFileStopsAtExportAndRestopsTheSource(t *testing.T) {
	w := newTwoMacs(t)
	before, sum := w.machine("stopped")
	code, _, errOut := w.migrate("web", "--from", "mac-a", "--to", "mac-b", "--check", "/etc/nope")
	if code != ExitFailure || !strings.Contains(errOut, "export on Mac mac-a failed: cannot read /etc/nope in machine web") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	w.untouched(before, sum) // stopped again
}

// side runs one Mac's end (export-stream, import-stream) on mac-a's world.
func (w *twoMacs) side(args ...string) *exec.Cmd {
	cmd := exec.Command(w.bin, append([]string{"machine"}, args...)...)
	cmd.Env = append(w.env, "ORBSIM_HOME="+filepath.Join(w.root, "mac-a", "orbsim"), "TMPDIR="+filepath.Join(w.root, "mac-a", "tmp"))
	return cmd
}

func TestExportStreamRemovesItsArchiveOnSIGTERMEvenWhileBlocked(t *testing.T) {
	w := newTwoMacs(t)
	w.machine("running")
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := w.side("export-stream", "web")
	cmd.Stdout = wr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	defer r.Close()
	// The header and the first 64 KiB fill the pipe: it blocks in a write.
	head := make([]byte, 1)
	if _, err := r.Read(head); err != nil {
		t.Fatal(err)
	}
	archives, _ := filepath.Glob(filepath.Join(w.root, "mac-a", "tmp", "pyinfra-orbstack-export-*"))
	if len(archives) != 1 {
		t.Fatalf("temp dirs while streaming: %v", archives)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	w.noTempFiles()
	r.Close()
	if err := cmd.Wait(); err == nil {
		t.Fatal("export-stream succeeded after SIGTERM")
	}
}

func TestImportStreamCleansUpOnSIGTERMWhileWaitingForBytes(t *testing.T) {
	w := newTwoMacs(t)
	cmd := w.side("import-stream")
	in, _ := cmd.StdinPipe()
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(in, `{"name":"web","size":1000000,"sha256":"%s","state":"running","checks":{}}`+"\n", strings.Repeat("0", 64))
	in.Write(make([]byte, 1000))
	deadline := time.Now().Add(10 * time.Second)
	for !partial(filepath.Join(w.root, "mac-a", "tmp")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var res importResult
	json.Unmarshal(out.Bytes(), &res)
	if err == nil || res.OK || res.Stage != stageTransfer || !strings.Contains(res.Error, "interrupted after 1000 of 1000000 bytes") {
		t.Fatalf("exit %v, result %q", err, out.String())
	}
	w.noTempFiles()
	if got := w.sim("mac-a", "list", "-q"); got != "" {
		t.Fatalf("machines: %q", got)
	}
}
