// Package remote reaches a pyinfra-orbstack binary on another Mac over the
// system's OpenSSH client (so the user's ssh config, agent, ProxyJump and
// ControlMaster apply). It owns the ssh command line, the quoting of the
// remote command, and what ssh's failures mean to a user (docs/remote.md).
package remote

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// Local is how a command line names the Mac the binary runs on.
const Local = "local"

// DefaultBinary is the remote binary when Mac.Binary is empty: found on the
// PATH of the remote user's non-interactive shell.
const DefaultBinary = "pyinfra-orbstack"

// EnvSSH names the ssh client to run (default "ssh" from PATH).
const EnvSSH = "PYINFRA_ORBSTACK_SSH"

// EnvSSHConfig names an ssh config file (`ssh -F`) used for every Mac that
// does not name its own: the way to point the binary at a farm's config, and
// the tests at their throwaway sshd servers.
const EnvSSHConfig = "PYINFRA_ORBSTACK_SSH_CONFIG"

// defaultOptions are added after the user's own -o options (for ssh the
// first value given wins, so the user's override these): never prompt (a
// deploy has no terminal to answer on), give up on a dead link within
// ~15 s instead of TCP's minutes, and on an unreachable host within 10 s.
var defaultOptions = []string{
	"BatchMode=yes",
	"ServerAliveInterval=5",
	"ServerAliveCountMax=3",
	"ConnectTimeout=10",
}

// Mac is where a pyinfra-orbstack binary runs: this Mac (Host empty or
// "local"), or one reached with `ssh HOST`.
type Mac struct {
	Host     string   // an ssh destination: alias, [user@]host, ssh://[user@]host[:port]
	Port     int      // 0: ssh's own (config or 22)
	User     string   // "": ssh's own
	Identity string   // private key file (-i), "": ssh's own
	Config   string   // ssh config file (-F), "": $PYINFRA_ORBSTACK_SSH_CONFIG or ssh's default
	Options  []string // more ssh options, each KEY=VALUE (-o)
	Binary   string   // pyinfra-orbstack on the Mac, "": DefaultBinary from PATH

	// ControlPath, when set, is a connection master's socket the command
	// rides on (the relay's own, Relay.start): no new SSH handshake per
	// command.
	ControlPath string
	// Master makes the command the connection master on ControlPath
	// instead of a client of it.
	Master bool
}

// IsLocal reports whether m is the Mac this binary runs on.
func (m Mac) IsLocal() bool { return m.Host == "" || m.Host == Local }

// Name is how messages name the Mac.
func (m Mac) Name() string {
	if m.IsLocal() {
		return "this Mac"
	}
	return m.Host
}

// Check refuses what ssh would misread: a destination or option that starts
// with "-" would be taken as an ssh option, and a newline in any of them
// could end an ssh_config line.
func (m Mac) Check() error {
	if m.IsLocal() {
		return nil
	}
	bad := func(what, v string) error {
		return fmt.Errorf("invalid %s %q for Mac %s: %s", what, v, m.Host, "it must not start with \"-\" or hold control characters")
	}
	for what, v := range map[string]string{"ssh destination": m.Host, "ssh user": m.User, "ssh key": m.Identity, "ssh config": m.Config, "remote binary": m.Binary} {
		if strings.HasPrefix(v, "-") || strings.ContainsAny(v, "\x00\r\n") {
			return bad(what, v)
		}
	}
	for _, o := range m.Options {
		k, _, ok := strings.Cut(o, "=")
		if !ok || k == "" || strings.HasPrefix(o, "-") || strings.ContainsAny(o, "\x00\r\n") {
			return fmt.Errorf("invalid ssh option %q for Mac %s: write it as KEY=VALUE, as for ssh -o", o, m.Host)
		}
	}
	if m.Port < 0 || m.Port > 65535 {
		return fmt.Errorf("invalid ssh port %d for Mac %s: use 1-65535, or 0 for ssh's own", m.Port, m.Host)
	}
	return nil
}

// SSHArgs is the ssh command line (without the program) that runs the remote
// binary with args on m. getenv is os.Getenv in production.
func (m Mac) SSHArgs(getenv func(string) string, args ...string) []string {
	argv := m.options(getenv)
	// -T: no terminal (the protocol is binary-clean); -e none: no escape
	// character in the byte stream.
	return append(argv, "-T", "-e", "none", "--", m.Host, RemoteCommand(m.Binary, args...))
}

// options is the ssh command line's options, without the destination.
func (m Mac) options(getenv func(string) string) []string {
	argv := []string{}
	if m.ControlPath != "" && m.Master {
		// Before the user's -o (the first value wins): the master's socket
		// is private to this run.
		argv = append(argv, "-o", "ControlPath="+m.ControlPath, "-o", "ControlMaster=yes", "-o", "ControlPersist=no")
	}
	config := m.Config
	if config == "" {
		config = getenv(EnvSSHConfig)
	}
	if config != "" {
		argv = append(argv, "-F", config)
	}
	if m.Port != 0 {
		argv = append(argv, "-p", strconv.Itoa(m.Port))
	}
	if m.User != "" {
		argv = append(argv, "-l", m.User)
	}
	if m.Identity != "" {
		argv = append(argv, "-i", m.Identity)
	}
	for _, o := range m.Options {
		argv = append(argv, "-o", o)
	}
	for _, o := range defaultOptions {
		argv = append(argv, "-o", o)
	}
	if m.ControlPath != "" && !m.Master {
		argv = append(argv, "-o", "ControlPath="+m.ControlPath, "-o", "ControlMaster=no")
	}
	return argv
}

// SSHProgram is the ssh client to run.
func SSHProgram(getenv func(string) string) string {
	if p := getenv(EnvSSH); p != "" {
		return p
	}
	return "ssh"
}

// Command is an *exec.Cmd that runs the binary with args on m: over ssh, or,
// for this Mac, self (this binary's path) directly.
func (m Mac) Command(getenv func(string) string, self string, args ...string) *exec.Cmd {
	if m.IsLocal() {
		return exec.Command(self, args...)
	}
	return exec.Command(SSHProgram(getenv), m.SSHArgs(getenv, args...)...)
}

// RemoteCommand is the one string ssh hands to the remote user's login shell
// (sh, bash or zsh): every word single-quoted, so nothing in it is expanded,
// except a leading "~/" of the binary's path, which the shell expands to
// the remote home. The words are ours (subcommand, flags, names checked by
// their own rules): no command text or secret ever goes here; those travel
// on stdin.
func RemoteCommand(binary string, args ...string) string {
	if binary == "" {
		binary = DefaultBinary
	}
	words := make([]string, 0, len(args)+1)
	if rest, ok := strings.CutPrefix(binary, "~/"); ok {
		words = append(words, "~/"+quote(rest))
	} else {
		words = append(words, quote(binary))
	}
	for _, a := range args {
		words = append(words, quote(a))
	}
	return strings.Join(words, " ")
}

func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
