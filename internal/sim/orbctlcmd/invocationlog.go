//go:build linux

package orbctlcmd

import (
	"os"
	"strings"
	"syscall"
)

// EnvLog names a file that every invocation appends one line to: its
// arguments, or only "run" for `run` (a command's text may hold secrets). Tests
// count orbctl calls with it.
const EnvLog = "ORBSIM_LOG"

func logInvocation(args []string) {
	path := os.Getenv(EnvLog)
	if path == "" {
		return
	}
	line := strings.Join(args, " ")
	if len(args) > 0 && args[0] == "run" {
		line = "run"
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	// One write of a whole line under a lock: concurrent invocations never interleave.
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX) == nil {
		defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	f.WriteString(line + "\n")
}
