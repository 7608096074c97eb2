package rpc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sudoRun is what the shim builds for _sudo=True: pyinfra's wrapping of `sh STAGE/run`.
func sudoRun(stage string) string { return "sudo -H -n sh -c 'sh " + stage + "/run'" }

func withSudoMachine(t *testing.T) *testConn {
	s := withMachines(t, map[string]string{"web": "running"})
	if !s.sim {
		t.Skip("needs the simulator's machines (sudo, real files)")
	}
	if _, code := s.sh("web", "", "sudo -n true"); code != 0 {
		t.Skip("the machine's default user has no passwordless sudo")
	}
	return s
}

func stageIn(t *testing.T, s *testConn) string {
	dir, _ := s.sh("web", "", "mktemp -d")
	return dir + "/pyinfra-orbstack-" + strings.Repeat("ab", 8)
}

func TestEscalatedPutWritesAsTheTargetUserInOneRequest(t *testing.T) {
	s := withSudoMachine(t)
	s.sh("web", "root", "printf old > /etc/t-esc && chown root:adm /etc/t-esc && chmod 640 /etc/t-esc")
	stage := stageIn(t, s)
	content := []byte("new\x00bytes\nno newline")
	var res FileResult
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, content), "remote_path": "/etc/t-esc",
		"escalation": map[string]any{"command": sudoRun(stage), "stage_dir": stage}}, &res)
	if e != nil {
		t.Fatal(e)
	}
	if got, _ := s.sh("web", "root", "od -An -c /etc/t-esc | tr -s ' '; stat -c '%a %U %G' /etc/t-esc"); !strings.Contains(got, "n e w \\0 b y t e s") || !strings.HasSuffix(got, "640 root adm") {
		t.Fatalf("/etc/t-esc: %q", got)
	}
	if left, _ := s.sh("web", "root", "ls -d "+stage+" /etc/.pyinfra-orbstack.* /var/tmp/pyinfra-orbstack-*/* 2>/dev/null; true"); left != "" {
		t.Fatalf("left behind: %s", left)
	}
	// A new file gets the mode a plain put gives one (the user's umask, not the stage's).
	stage = stageIn(t, s)
	if e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, content), "remote_path": "/etc/t-esc-new",
		"escalation": map[string]any{"command": sudoRun(stage), "stage_dir": stage}}, &res); e != nil {
		t.Fatal(e)
	}
	if got, _ := s.sh("web", "root", "stat -c '%a %U' /etc/t-esc-new"); got != "644 root" {
		t.Fatalf("a new file: %q, want 644 root", got)
	}
}

func TestEscalatedGetReadsWhatOnlyTheTargetUserCan(t *testing.T) {
	s := withSudoMachine(t)
	s.sh("web", "root", "printf 'root only' > /root/t-secret && chmod 600 /root/t-secret")
	stage := stageIn(t, s)
	local := filepath.Join(t.TempDir(), "got")
	var res FileResult
	e := s.call(MethodFileGet, map[string]any{"machine": "web", "local_path": local, "remote_path": "/root/t-secret",
		"escalation": map[string]any{"command": sudoRun(stage), "stage_dir": stage}}, &res)
	if e != nil {
		t.Fatal(e)
	}
	if got, _ := os.ReadFile(local); string(got) != "root only" || res.Size != 9 {
		t.Fatalf("got %q (%d bytes)", got, res.Size)
	}
	if left, _ := s.sh("web", "root", "ls -d "+stage+" 2>/dev/null; true"); left != "" {
		t.Fatalf("left behind: %s", left)
	}
}

func TestAFailedEscalationReportsItsStatusAndStderrAndChangesNothing(t *testing.T) {
	s := withSudoMachine(t)
	s.sh("web", "root", "printf old > /etc/t-esc-fail")
	stage := stageIn(t, s)
	// What sudo -n says when it needs a password: the shim's retry looks for it.
	refuse := `sh -c 'echo "sudo: a password is required" >&2; exit 1'`
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, []byte("new")), "remote_path": "/etc/t-esc-fail",
		"escalation": map[string]any{"command": refuse, "stage_dir": stage}}, nil)
	d := wantError(t, e, CodeIOError, "io_error")
	if d.Escalation == nil || d.Escalation.ExitCode != 1 || strings.Join(d.Escalation.Stderr, "|") != "sudo: a password is required" {
		t.Fatalf("escalation %+v", d.Escalation)
	}
	if !strings.Contains(e.Message, "writing /etc/t-esc-fail on web failed: sudo: a password is required") {
		t.Fatalf("message %q", e.Message)
	}
	if got, _ := s.sh("web", "root", "cat /etc/t-esc-fail; ls -d "+stage+" 2>/dev/null; true"); got != "old" {
		t.Fatalf("after the failure: %q", got)
	}
}

func TestAnExistingStageDirectoryIsNeitherUsedNorRemoved(t *testing.T) {
	s := withSudoMachine(t)
	stage := stageIn(t, s)
	s.sh("web", "", "mkdir "+stage+" && touch "+stage+"/mine")
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, []byte("x")), "remote_path": "/etc/t-esc-never",
		"escalation": map[string]any{"command": sudoRun(stage), "stage_dir": stage}}, nil)
	d := wantError(t, e, CodeIOError, "io_error")
	if d.Escalation != nil || !strings.Contains(e.Message, "File exists") {
		t.Fatalf("error %q %+v", e.Message, d.Escalation)
	}
	if got, _ := s.sh("web", "root", "ls "+stage+"; test -e /etc/t-esc-never && echo written; true"); got != "mine" {
		t.Fatalf("after: %q", got)
	}
}

// The escalation command may hold a sudo password (pyinfra's askpass variable):
// it is never in an argv on the Mac.
func TestTheEscalationCommandIsNotInTheMacsProcessList(t *testing.T) {
	s := withSudoMachine(t)
	secret := "pw-secret-" + newNonce()
	stage := stageIn(t, s)
	command := "env PYINFRA_SUDO_PASSWORD=" + secret + " sudo -H -n sh -c 'sleep 1; sh " + stage + "/run'"
	stop, seen := make(chan struct{}), make(chan string, 1)
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if line := hostArgvWith(secret); line != "" {
				seen <- line
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	e := s.call(MethodFilePut, map[string]any{"machine": "web", "local_path": localFile(t, []byte("x")), "remote_path": "/etc/t-esc-secret",
		"escalation": map[string]any{"command": command, "stage_dir": stage}}, nil)
	close(stop)
	if e != nil {
		t.Fatal(e)
	}
	if line := <-seen; line != "" {
		t.Fatalf("the escalation command was in the process list of the host: %q", line)
	}
}
