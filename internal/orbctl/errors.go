package orbctl

import (
	"errors"
	"strings"
)

// Sentinel kinds. Every failure the driver returns is an *Error whose Kind is
// one of these (or ErrFailed), so callers branch with errors.Is.
var (
	ErrOrbctlNotFound     = errors.New("orbctl not found")
	ErrOrbStackNotRunning = errors.New("OrbStack is not running")
	ErrMachineNotFound    = errors.New("machine not found")
	ErrMachineExists      = errors.New("machine already exists")
	ErrBadArgument        = errors.New("bad argument")
	ErrNotReady           = errors.New("machine not ready")
	ErrFailed             = errors.New("orbctl failed")
)

// Error is an orbctl failure with everything a user needs to act on it:
// orbctl's own message, the argv that produced it and its exit status.
type Error struct {
	Kind     error
	Machine  string   // the machine concerned, when there is one
	Args     []string // orbctl's argv without the program path
	Stderr   string   // orbctl's own message, trimmed
	ExitCode int
	Searched []string // ErrOrbctlNotFound: where we looked
	Message  string   // our message when orbctl said nothing useful
	Hint     string   // what to do, when orbctl's message does not say
	// Option is the CreateOptions or Limits field whose own rule a bad
	// argument broke (cpus, memory, disk, mounts), so callers can name it in
	// their own terms.
	Option string
}

func (e *Error) Error() string {
	switch {
	case e.Stderr != "" && e.Hint != "":
		return e.Stderr + " (" + e.Hint + ")"
	case e.Stderr != "":
		return e.Stderr
	case e.Message != "":
		return e.Message
	default:
		return e.Kind.Error()
	}
}

func (e *Error) Unwrap() error { return e.Kind }

// classify maps orbctl's stderr to an error kind. The texts come from the
// orbctl reference §5 (server errors are "[-32098] …", cobra's are "Error: …").
func classify(stderr string) error {
	s := strings.ToLower(stderr)
	switch {
	case strings.Contains(s, "machine not found"), strings.Contains(s, "no machine found"):
		return ErrMachineNotFound
	case strings.Contains(s, "already exists"):
		return ErrMachineExists
	case strings.Contains(s, "orbstack is not running"),
		strings.Contains(s, "failed to start orbstack"),
		strings.Contains(s, "orbstack is stopped"):
		return ErrOrbStackNotRunning
	case strings.Contains(s, "invalid machine name"),
		strings.Contains(s, "error: invalid"),
		strings.Contains(s, "error: unknown flag"),
		strings.Contains(s, "error: missing value"),
		strings.Contains(s, "error: accepts"),
		strings.Contains(s, "error: requires"),
		strings.Contains(s, "error: no machines specified"),
		strings.Contains(s, "unknown configuration key"),
		strings.Contains(s, "image not found"),
		strings.Contains(s, "cloud-init not supported"):
		return ErrBadArgument
	}
	return ErrFailed
}

// IsRunMachineNotFound reports whether stderr is nothing but the line
// `orbctl run -m machine` prints when machine does not exist: the server's
// "[-32098] machine not found: 'NAME'" of recent versions or 0.x's
// "machine not found: NAME" (reference §10; testdata/orbctl has both), or
// the bare "machine not found" of a lookup that names nothing.
func IsRunMachineNotFound(stderr, machine string) bool {
	switch strings.TrimSpace(stderr) {
	case "[-32098] machine not found: '" + machine + "'", "machine not found: " + machine, "machine not found":
		return true
	}
	return false
}

// trimUsage keeps cobra's "Error: …" line and drops the usage text it prints after.
func trimUsage(stderr string) string {
	s := strings.TrimSpace(stderr)
	if i := strings.Index(s, "\nUsage:"); i >= 0 && strings.HasPrefix(s, "Error:") {
		s = strings.TrimSpace(s[:i])
	}
	return s
}

// hint says what to do about the orbctl failures whose message does not.
func hint(stderr string) string {
	if strings.Contains(stderr, "invalid machine name") {
		return NameRule
	}
	return ""
}
