//go:build linux

package distro

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	cases := []struct {
		word, version string
		cloud         bool
		major         int
		want          Image
	}{
		{"debian", "12", false, 2, Image{"debian", "bookworm", "arm64", "default"}},
		{"ubuntu", "24.04", false, 2, Image{"ubuntu", "noble", "arm64", "default"}},
		{"ubuntu", "", false, 2, Image{"ubuntu", "questing", "arm64", "default"}},
		{"ubuntu", "", false, 1, Image{"ubuntu", "plucky", "arm64", "default"}},
		{"arch", "", false, 2, Image{"archlinux", "current", "arm64", "default"}},
		{"gentoo", "", false, 2, Image{"gentoo", "current", "arm64", "openrc"}},
		{"alpine", "", true, 2, Image{"alpine", "3.22", "arm64", "cloud"}},
	}
	for _, c := range cases {
		got, err := Resolve(c.word, c.version, "arm64", c.cloud, c.major)
		require.NoError(t, err, c.word)
		assert.Equal(t, c.want, got, c.word+":"+c.version)
	}
}

func TestResolveErrors(t *testing.T) {
	_, err := Resolve("ubuntu", "bogus", "arm64", false, 2)
	assert.EqualError(t, err, "make rootfs: image not found: {ubuntu bogus arm64 default}")
	_, err = Resolve("arch", "", "arm64", true, 2)
	assert.EqualError(t, err, "cloud-init not supported for 'archlinux'")
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"web", "web-1", "a.b", "ab", "9x"} {
		assert.True(t, ValidName(ok), ok)
	}
	for _, bad := range []string{"", "a", "9", "-x", "a_b", "docker", "default", "k8s", "host", "with space"} {
		assert.False(t, ValidName(bad), bad)
	}
	assert.True(t, ValidName(strings.Repeat("n", 64)), "64 characters is the hostname limit")
	assert.False(t, ValidName(strings.Repeat("n", 65)), "65 characters cannot be a hostname")
	assert.Equal(t, "invalid machine name '"+strings.Repeat("n", 65)+"' (65 characters; at most 64, the Linux hostname limit)",
		InvalidNameMessage(strings.Repeat("n", 65)))
	assert.Equal(t, "invalid machine name 'a_b'", InvalidNameMessage("a_b"))
}
