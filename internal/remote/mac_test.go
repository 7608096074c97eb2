package remote

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func TestRemoteCommandReachesTheShellWordForWord(t *testing.T) {
	words := []string{"machine", "info", "it's", "$(touch /tmp/x)", "a b", "`id`", "--json"}
	line := RemoteCommand("printf", append([]string{"%s\n"}, words...)...)
	out, err := exec.Command("sh", "-c", line).Output()
	require.NoError(t, err)
	assert.Equal(t, strings.Join(words, "\n")+"\n", string(out))
}

func TestRemoteCommandExpandsOnlyALeadingTildeOfTheBinary(t *testing.T) {
	assert.Equal(t, `~/'.local/bin/pyinfra-orbstack' 'serve'`, RemoteCommand("~/.local/bin/pyinfra-orbstack", "serve"))
	assert.Equal(t, `'pyinfra-orbstack' 'serve'`, RemoteCommand("", "serve"))
}

func TestSSHArgsPutTheUsersOptionsBeforeOurDefaults(t *testing.T) {
	m := Mac{Host: "mini-1", Port: 2222, User: "ci", Identity: "/k", Options: []string{"BatchMode=no"}}
	args := m.SSHArgs(func(k string) string {
		if k == EnvSSHConfig {
			return "/farm/ssh_config"
		}
		return ""
	}, "serve")
	line := strings.Join(args, " ")
	assert.True(t, strings.HasPrefix(line, "-F /farm/ssh_config -p 2222 -l ci -i /k -o BatchMode=no -o BatchMode=yes"), line)
	assert.True(t, strings.HasSuffix(line, "-T -e none -- mini-1 'pyinfra-orbstack' 'serve'"), line)
	own := Mac{Host: "mini-1", Config: "/mine"}.SSHArgs(func(string) string { return "/farm" }, "serve")
	assert.Equal(t, []string{"-F", "/mine"}, own[:2])
}

func TestCheckRefusesWhatSSHWouldTakeForAnOption(t *testing.T) {
	for _, m := range []Mac{
		{Host: "-oProxyCommand=touch /tmp/x"},
		{Host: "mini", User: "-x"},
		{Host: "mini", Options: []string{"NoEquals"}},
		{Host: "mini", Options: []string{"A=b\nHost *"}},
		{Host: "mini", Binary: "-c"},
		{Host: "mini", Port: 70000},
	} {
		assert.Error(t, m.Check(), "%+v", m)
	}
	assert.NoError(t, Mac{Host: "ssh://ci@mini:2222", Options: []string{"ProxyJump=bastion"}}.Check())
	assert.NoError(t, Mac{}.Check())
	assert.True(t, Mac{Host: Local}.IsLocal())
}

func TestClassifyNamesTheMacAndTheFix(t *testing.T) {
	m := Mac{Host: "mini-2"}
	cases := []struct {
		code   int
		stderr string
		kind   Kind
		says   string
	}{
		{255, "ssh: Could not resolve hostname mini-2: Name or service not known\n", Unreachable, "cannot reach Mac mini-2"},
		{255, "ssh: connect to host 127.0.0.1 port 1: Connection refused\n", Unreachable, "ssh mini-2 true"},
		{255, "root@127.0.0.1: Permission denied (publickey).\n", AuthFailed, "ssh-add"},
		{255, "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.\n", HostKey, "accept it"},
		{127, "zsh:1: command not found: pyinfra-orbstack\n", BinaryMissing, "orbstack_remote_binary"},
		{1, "Error: unknown command \"transfer\"\n", Failed, "exit status 1"},
	}
	for _, c := range cases {
		e := Classify(m, c.code, c.stderr)
		assert.Equal(t, c.kind, e.Kind, c.stderr)
		assert.Contains(t, e.Message, c.says)
		assert.Contains(t, e.Message, "mini-2")
	}
}

func TestSSHArgsOfTheMasterAndItsSessions(t *testing.T) {
	m := Mac{Host: "mini-1", Options: []string{"ControlMaster=no"}, ControlPath: "/tmp/p/c", Master: true}
	line := strings.Join(m.SSHArgs(noEnv, "serve"), " ")
	// The master's socket options come first: ours win over the user's -o.
	assert.True(t, strings.HasPrefix(line, "-o ControlPath=/tmp/p/c -o ControlMaster=yes -o ControlPersist=no -o ControlMaster=no"), line)
	m.Master = false
	line = strings.Join(m.SSHArgs(noEnv, "transfer"), " ")
	assert.Contains(t, line, "-o ControlPath=/tmp/p/c -o ControlMaster=no -T -e none -- mini-1 'pyinfra-orbstack' 'transfer'")
	assert.NotContains(t, line, "ControlMaster=yes")
}
