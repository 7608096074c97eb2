//go:build linux

package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIssueDoneWhen is issue 2's acceptance list (its machines "a" and "b"
// are "ma" and "mb": OrbStack names have at least two characters): a fresh
// ORBSIM_HOME, root, default user = the invoking user.
func TestIssueDoneWhen(t *testing.T) {
	s := newSim(t).with("ORBSIM_MAC_USER=")
	s.ok("create", "debian", "ma")
	s.ok("create", "debian", "mb")

	t.Run("list -f json is an array of two records with the reference's fields and types", func(t *testing.T) {
		var recs []map[string]any
		require.NoError(t, json.Unmarshal([]byte(s.ok("list", "-f", "json")), &recs))
		require.Len(t, recs, 2)
		for _, r := range recs {
			assert.Len(t, r["id"], 26)
			assert.IsType(t, "", r["name"])
			img := r["image"].(map[string]any)
			for _, k := range []string{"distro", "version", "arch", "variant"} {
				assert.IsType(t, "", img[k], k)
			}
			cfg := r["config"].(map[string]any)
			assert.IsType(t, false, cfg["isolated"])
			assert.IsType(t, "", cfg["default_username"])
			assert.Equal(t, false, r["builtin"])
			assert.Equal(t, "running", r["state"])
		}
	})

	t.Run("a write in a is invisible to b and to the host", func(t *testing.T) {
		s.ok("run", "-m", "ma", "sh", "-c", "echo x > /root/f")
		assert.Equal(t, 1, s.orbctl("run", "-m", "mb", "test", "-e", "/root/f").Code)
		_, err := os.Stat("/root/f")
		assert.True(t, os.IsNotExist(err), "host must not have /root/f")
	})

	t.Run("info of a missing machine", func(t *testing.T) {
		r := s.orbctl("info", "nope")
		assert.Equal(t, result{"", "[-32098] machine not found: 'nope'\n", 1}, r)
	})

	t.Run("run rejects a literal --", func(t *testing.T) {
		r := s.orbctl("run", "-m", "ma", "--", "true")
		assert.Equal(t, 1, r.Code)
		assert.Empty(t, r.Stdout)
		assert.Regexp(t, `^Error: unknown flag --\nUsage:\n  orbctl run \[flags\] -- \[COMMAND\] \[ARGS\]\.\.\.`, r.Stderr)
	})

	t.Run("a 50 MB random file survives push then pull", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "big")
		data := make([]byte, 50<<20)
		rand.Read(data)
		require.NoError(t, os.WriteFile(src, data, 0o600))
		s.ok("push", "-m", "ma", src, "big")
		back := filepath.Join(dir, "back")
		s.ok("pull", "-m", "ma", "big", back)
		got, err := os.ReadFile(back)
		require.NoError(t, err)
		assert.Equal(t, sha256.Sum256(data), sha256.Sum256(got))
	})

	t.Run("a nohup'd process lives until the machine stops", func(t *testing.T) {
		s.ok("run", "-m", "ma", "sh", "-c", "nohup sleep 1000 >/dev/null 2>&1 &")
		assert.Equal(t, 0, s.orbctl("run", "-m", "ma", "pgrep", "-x", "sleep").Code, "still running on the next run")
		s.ok("stop", "ma")
		assert.Equal(t, 1, s.orbctl("run", "-m", "ma", "pgrep", "-x", "sleep").Code, "gone after stop (run restarted ma)")
	})

	t.Run("machines reach each other as NAME.orb.local", func(t *testing.T) {
		s.ok("start", "ma", "mb")
		s.ok("run", "-m", "ma", "ping", "-c1", "-W2", "mb.orb.local")
	})
}
