//go:build linux

package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
)

// ShellQuote must keep every argument one word, whatever it contains.
func TestShellQuoteRoundTripsThroughSh(t *testing.T) {
	args := []string{"plain", "a b", "$HOME", "it's", "", "*", "back\\slash", "new\nline", `"dq"`}
	script := "printf '[%s]'"
	want := ""
	for _, a := range args {
		script += " " + ShellQuote(a)
		want += "[" + a + "]"
	}
	out, err := exec.Command("sh", "-c", script).Output()
	assert.NoError(t, err)
	assert.Equal(t, want, string(out))
}

func TestShellQuoteLeavesSafeWordsBare(t *testing.T) {
	assert.Equal(t, "/usr/bin/env", ShellQuote("/usr/bin/env"))
	assert.Equal(t, "a=b", ShellQuote("a=b"))
	assert.Equal(t, "''", ShellQuote(""))
}

func TestCanEnter(t *testing.T) {
	dir := t.TempDir()
	locked := dir + "/locked"
	os.Mkdir(locked, 0o700)
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's parent is 0700
	assert.True(t, canEnter(dir, 1000, []uint32{1000}))
	assert.False(t, canEnter(locked, 1000, []uint32{1000}), "0700 root dir")
	assert.True(t, canEnter(locked, 0, nil), "root enters anything")
	assert.False(t, canEnter(dir+"/missing", 0, nil))
}

func TestLookupAccount(t *testing.T) {
	p := t.TempDir() + "/passwd"
	os.WriteFile(p, []byte("root:x:0:0:root:/root:/bin/bash\ndev:x:501:501:dev:/home/dev:/bin/sh\n"), 0o644)
	a, err := LookupAccount(p, "dev")
	assert.NoError(t, err)
	assert.Equal(t, Account{Name: "dev", UID: 501, GID: 501, Home: "/home/dev", Shell: "/bin/sh"}, a)
	_, err = LookupAccount(p, "nobody")
	assert.EqualError(t, err, "user not found: nobody")
}
