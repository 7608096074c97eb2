// Package orbctltest provides orbctls for tests: the simulator when it has been
// built, and a small fake for the failures the simulator cannot produce on
// demand (and for machines where it cannot run).
package orbctltest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fakeScript is an orbctl that keeps machines as files under $FAKE_ORBCTL_HOME
// and runs `run` commands on this host. It mimics orbctl's outputs and
// failures from the orbctl reference (§2, §5), including the silent exit 1 of
// `run -m missing`. FAKE_ORBCTL_FAIL="status text" makes every command except
// run print that text and exit 1; FAKE_ORBCTL_RUN_FAIL="text" makes run print
// it and exit 255 (a machine that never answers); FAKE_ORBCTL_SLOW_START=SECS
// makes start take that long; FAKE_ORBCTL_LOG appends each
// argv to a file.
const fakeScript = `#!/bin/sh
home=${FAKE_ORBCTL_HOME:?}
[ -n "$FAKE_ORBCTL_LOG" ] && printf '%s\n' "$*" >> "$FAKE_ORBCTL_LOG"
m="$home/machines"
mkdir -p "$m"
if [ -n "$FAKE_ORBCTL_FAIL" ] && [ "$1" != run ]; then echo "$FAKE_ORBCTL_FAIL" >&2; exit 1; fi
idof() { printf '01K2G8TY5GM9C3CN95KCB4ZG%s' "$(printf %s "$1" | cksum | cut -c1-2)"; }
resolve() { # name or ID -> name
  [ -e "$m/$1" ] && { echo "$1"; return; }
  for f in "$m"/*; do [ -e "$f" ] && [ "$(idof "$(basename "$f")")" = "$1" ] && basename "$f"; done
}
record() { # name
  read -r state distro user < "$m/$1"
  printf '{"id":"%s","name":"%s","image":{"distro":"%s","version":"bookworm","arch":"amd64","variant":"default"},"config":{"isolated":false,"default_username":"%s"},"builtin":false,"state":"%s"}' \
    "$(idof "$1")" "$1" "$distro" "$user" "$state"
}
notfound() { echo "[-32098] machine not found: '$1'" >&2; exit 1; }
setstate() { read -r state distro user < "$m/$1"; echo "$2 $distro $user" > "$m/$1"; }
cmd=$1; shift
case "$cmd" in
list)
  printf '['; sep=
  for f in "$m"/*; do [ -e "$f" ] || continue; printf '%s' "$sep"; record "$(basename "$f")"; sep=,; done
  printf ']\n' ;;
info)
  name=$(resolve "$1"); [ -n "$name" ] || notfound "$1"; set -- "$name"
  read -r state distro user < "$m/$1"
  if [ "$state" = running ]; then ip=',"ip4":"198.19.249.2"'; else ip=; fi
  printf '{"record":'; record "$1"; printf ',"disk_size":1024%s}\n' "$ip" ;;
create)
  while :; do case "$1" in -a|-u) shift 2 ;; -*) echo "Error: unknown flag $1" >&2; exit 1 ;; *) break ;; esac; done
  name=$2; [ -n "$name" ] || name=${1%%:*}
  [ -e "$m/$name" ] && { echo "[-32098] create '$name': machine already exists: '$name'" >&2; exit 1; }
  echo "running ${1%%:*} ${FAKE_ORBCTL_USER:-tester}" > "$m/$name" ;;
start|stop|restart)
  [ $# -gt 0 ] || { echo "Error: no machines specified" >&2; exit 1; }
  [ "$cmd" = start ] && [ -n "$FAKE_ORBCTL_SLOW_START" ] && sleep "$FAKE_ORBCTL_SLOW_START"
  [ -e "$m/$1" ] || notfound "$1"
  [ "$cmd" = stop ] && setstate "$1" stopped || setstate "$1" running ;;
delete)
  [ "$1" = -f ] && shift
  # orbctl dereferences a nil record when deleting by ULID (reference §2).
  [ -n "$(resolve "$1")" ] && [ ! -e "$m/$1" ] && { echo "panic: runtime error: invalid memory address or nil pointer dereference" >&2; exit 2; }
  [ -e "$m/$1" ] || notfound "$1"
  rm -f "$m/$1" ;;
status) echo Running ;;
version) printf 'Version: 2.2.3 (2020300)\nCommit: 0000000 (fake)\n' ;;
run)
  machine= dir=
  while :; do case "$1" in
    -m) machine=$2; shift 2 ;;
    -u) shift 2 ;;
    -w) dir=$2; shift 2 ;;
    --) echo "Error: unknown flag --" >&2; exit 1 ;;
    -*) echo "Error: unknown flag $1" >&2; exit 1 ;;
    *) break ;;
  esac; done
  [ -e "$m/$machine" ] || exit 1
  [ -n "$FAKE_ORBCTL_RUN_FAIL" ] && { echo "$FAKE_ORBCTL_RUN_FAIL" >&2; exit 255; }
  setstate "$machine" running
  cd "${dir:-$HOME}" 2>/dev/null || cd /
  exec "$@" ;;
*) echo "Error: unknown command \"$cmd\" for \"orbctl\"" >&2; exit 1 ;;
esac
`

// Fake writes the fake orbctl into a temp dir and points it at a fresh state
// dir. It returns the orbctl path and sets FAKE_ORBCTL_HOME for the test.
func Fake(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "orbctl")
	if err := os.WriteFile(path, []byte(fakeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_ORBCTL_HOME", filepath.Join(dir, "state"))
	return path
}

// AddMachine creates a machine in the fake's state: state is "running" or
// "stopped".
func AddMachine(t testing.TB, name, state string) {
	t.Helper()
	home := os.Getenv("FAKE_ORBCTL_HOME")
	if err := os.MkdirAll(filepath.Join(home, "machines"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "machines", name), []byte(state+" debian tester\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// RepoRoot is the module root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Simulator returns the path of the built simulator (bin/orbctl) with a private
// ORBSIM_HOME, or skips the test when it cannot run here.
func Simulator(t testing.TB) string {
	t.Helper()
	path, reason := simulatorPath()
	if reason != "" {
		t.Skip(reason)
	}
	t.Setenv("ORBSIM_HOME", t.TempDir())
	t.Cleanup(func() { DeleteAll(path) })
	return path
}

// WithMachines gives a test an orbctl with exactly these machines ("name" →
// "running" or "stopped"): the simulator when it runs here (its machines are
// deleted when the test ends), otherwise the fake, saying so in the test log.
// It returns the orbctl path and whether it is the simulator.
func WithMachines(t testing.TB, machines map[string]string) (string, bool) {
	t.Helper()
	path, reason := simulatorPath()
	if reason != "" && simBroken {
		// Built and run as root, the simulator must work: falling back to the fake
		// would hide a broken simulator behind green tests.
		t.Fatalf("the simulator is built and we are root, but: %s", reason)
	}
	if reason != "" {
		t.Logf("using the fake orbctl: %s", reason)
		fake := Fake(t)
		for name, state := range machines {
			AddMachine(t, name, state)
		}
		return fake, false
	}
	t.Setenv("ORBSIM_HOME", t.TempDir())
	orb := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(path, args...).CombinedOutput(); err != nil {
			t.Fatalf("orbctl %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { DeleteAll(path) })
	for name, state := range machines {
		orb("create", "-u", "tester", "debian", name)
		if state == "stopped" {
			orb("stop", name)
		}
	}
	return path, true
}

// DeleteAll deletes every machine of the simulator at path (in the current
// ORBSIM_HOME), by name, so that no machine outlives its test.
func DeleteAll(path string) {
	out, _ := exec.Command(path, "list", "-q").Output()
	for _, name := range strings.Fields(string(out)) {
		exec.Command(path, "delete", "-f", name).Run()
	}
}

// simulatorPath returns bin/orbctl, or why it cannot be used here. It creates
// and deletes one machine, once per test binary, to find out.
func simulatorPath() (string, string) {
	simOnce.Do(func() { simPath, simReason = probeSimulator() })
	return simPath, simReason
}

var (
	simOnce   sync.Once
	simPath   string
	simReason string
	simBroken bool // built, root, and still cannot create a machine
)

func probeSimulator() (string, string) {
	path := filepath.Join(RepoRoot(), "bin", "orbctl")
	if _, err := os.Stat(path); err != nil {
		return "", "the simulator is not built (run `make build`)"
	}
	if os.Geteuid() != 0 {
		return "", "the simulator's machines need root"
	}
	home, err := os.MkdirTemp("", "orbsim-probe-")
	if err != nil {
		return "", err.Error()
	}
	defer os.RemoveAll(home)
	env := append(os.Environ(), "ORBSIM_HOME="+home)
	create := exec.Command(path, "create", "debian", "probe")
	create.Env = env
	if out, err := create.CombinedOutput(); err != nil {
		simBroken = true
		return "", fmt.Sprintf("the simulator cannot create machines here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	del := exec.Command(path, "delete", "-f", "probe")
	del.Env = env
	del.Run()
	return path, ""
}
