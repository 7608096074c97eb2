package remote

import (
	"fmt"
	"strings"
)

// Kind says what went wrong reaching a Mac.
type Kind string

const (
	Unreachable   Kind = "unreachable"    // ssh could not connect (DNS, refused, timeout, link dropped)
	AuthFailed    Kind = "auth_failed"    // the server refused every key/password
	HostKey       Kind = "host_key"       // the host key is unknown or changed
	BinaryMissing Kind = "binary_missing" // no pyinfra-orbstack on the remote PATH (or at Mac.Binary)
	Failed        Kind = "failed"         // anything else: the remote binary's own error
	Lost          Kind = "dropped"        // the connection ended after the remote binary answered (Dropped)
)

// Error is a failure reaching or running the binary on a Mac, worded for the
// user with what to do.
type Error struct {
	Kind    Kind
	Mac     string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Classify turns how an ssh command ended (exit status, its stderr) into an
// Error naming the Mac and the fix. ssh exits 255 for its own failures and
// with the remote command's status otherwise; 127 and 126 are the remote
// shell's "command not found" and "not executable".
func Classify(m Mac, code int, stderr string) *Error {
	said := lastLines(stderr, 3)
	binary := m.binary()
	e := &Error{Kind: Failed, Mac: m.Host}
	switch {
	case m.binaryMissing(code, stderr):
		e.Kind = BinaryMissing
		e.Message = fmt.Sprintf("%s is not installed on Mac %s, or not on the PATH of its non-interactive shells (%s): "+
			"install it there with `pip install pyinfra-orbstack` (the same version as here), check with "+
			"`ssh %s %s version`, or give its absolute path in the host data orbstack_remote_binary (docs/remote.md)",
			binary, m.Host, orNothing(said), m.Host, binary)
	case code != 255:
		e.Message = fmt.Sprintf("%s on Mac %s failed (exit status %d): %s", binary, m.Host, code, orNothing(said))
	case strings.Contains(stderr, "Host key verification failed") || strings.Contains(stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED") ||
		strings.Contains(stderr, "No ED25519 host key is known") || strings.Contains(stderr, "host key is known"):
		e.Kind = HostKey
		e.Message = fmt.Sprintf("SSH does not trust Mac %s's host key (%s): connect once with `ssh %s true` to check and accept it, "+
			"then run pyinfra again", m.Host, orNothing(said), m.Host)
	case strings.Contains(stderr, "Permission denied") || strings.Contains(stderr, "Too many authentication failures"):
		e.Kind = AuthFailed
		e.Message = fmt.Sprintf("Mac %s refused the SSH login (%s): load your key into ssh-agent (`ssh-add`), or name it in "+
			"the host data orbstack_ssh_key or in your ssh config; `ssh %s true` must work without a prompt", m.Host, orNothing(said), m.Host)
	default:
		e.Kind = Unreachable
		e.Message = fmt.Sprintf("cannot reach Mac %s over SSH (%s): check that `ssh %s true` works from here "+
			"(host name, port, network, VPN)", m.Host, orNothing(said), m.Host)
	}
	return e
}

// Unreached reports whether an ssh command that exited with code (and this
// stderr) never ran the binary on m: ssh's own failure (255), or the remote
// shell not finding or not executing the binary (127, 126). Anything else is
// the binary's own exit status, its own error to report.
func (m Mac) Unreached(code int, stderr string) bool {
	return code == 255 || m.binaryMissing(code, stderr)
}

func (m Mac) binaryMissing(code int, stderr string) bool {
	return code == 127 || code == 126 && strings.Contains(stderr, m.binary())
}

func (m Mac) binary() string {
	if m.Binary == "" {
		return DefaultBinary
	}
	return m.Binary
}

// Dropped is the error of calls pending when the SSH connection to m ended.
func Dropped(m Mac, stderr string) *Error {
	return &Error{Kind: Lost, Mac: m.Host, Message: fmt.Sprintf(
		"the SSH connection to Mac %s dropped (%s): the command's outcome there is unknown; check `ssh %s true` and run pyinfra again",
		m.Host, orNothing(lastLines(stderr, 2)), m.Host)}
}

func orNothing(s string) string {
	if s == "" {
		return "ssh said nothing"
	}
	return s
}

// lastLines is the last n non-empty lines of s joined with "; ", without
// ssh's warnings about adding host keys (noise, not the failure).
func lastLines(s string, n int) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Warning: Permanently added") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "; ")
}
