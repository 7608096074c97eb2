//go:build linux

package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Package access (docs/simulator.md, "Package access"): machines reach
// Debian's, PyPI's and npm's registries through the simulator's proxy on
// their gateway, configured inside them as a user would, and nothing else.

// needRegistries skips when this host itself cannot reach Debian's archive:
// then no machine can, whatever the proxy does.
func needRegistries(t *testing.T) {
	t.Helper()
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
	resp, err := c.Head("http://deb.debian.org/debian/dists/bookworm/Release")
	if err != nil {
		t.Skipf("this host does not reach Debian's archive (%v): package access cannot be tested here", err)
	}
	resp.Body.Close()
}

// withProxyEnv runs script in a shell that read /etc/environment, as a
// login through PAM would.
func withProxyEnv(script string) string {
	return "set -a; . /etc/environment; set +a; " + script
}

func TestMachinesInstallPackagesThroughTheProxyAndReachNothingElse(t *testing.T) {
	t.Parallel()
	needRegistries(t)
	s := newSim(t)
	// A plan of this test's own, so that the proxy's lifetime is this test's machines'.
	s.ok("config", "set", "network.subnet4", "198.18.20.0/23")
	s.ok("stop")
	s.machine("pkgs")

	t.Run("apt installs a Debian package", func(t *testing.T) {
		r := s.orbctl("run", "-m", "pkgs", "-u", "root", "sh", "-c",
			"DEBIAN_FRONTEND=noninteractive apt-get install -y -q sl >/dev/null && dpkg-query -W -f '${Status}' sl && test -x /usr/games/sl")
		require.Equal(t, 0, r.Code, "%+v", r)
		assert.Equal(t, "install ok installed", r.Stdout)
	})
	t.Run("pip and npm reach their registries", func(t *testing.T) {
		r := s.orbctl("run", "-m", "pkgs", "sh", "-c",
			"cd /tmp && pip3 download -q --no-deps --no-cache-dir -d wheels six==1.17.0 && ls wheels && "+
				"npm view left-pad@1.3.0 version 2>/dev/null")
		require.Equal(t, 0, r.Code, "%+v", r)
		assert.Equal(t, "six-1.17.0-py2.py3-none-any.whl\n1.3.0\n", r.Stdout)
	})
	t.Run("any other destination is refused", func(t *testing.T) {
		r := s.orbctl("run", "-m", "pkgs", "sh", "-c", withProxyEnv("curl -sS -m 20 https://example.com/"))
		assert.Equal(t, 56, r.Code, "%+v", r)
		assert.Contains(t, r.Stderr, "CONNECT tunnel failed, response 403")
		r = s.orbctl("run", "-m", "pkgs", "sh", "-c", withProxyEnv("curl -sS -m 20 -w ' %{http_code}' http://example.com/"))
		assert.Equal(t, 0, r.Code, "%+v", r)
		assert.Contains(t, r.Stdout, "orbsim package proxy: example.com is not a package registry; machines reach only ")
		assert.True(t, strings.HasSuffix(r.Stdout, " 403"), r.Stdout)
		r = s.orbctl("run", "-m", "pkgs", "sh", "-c", withProxyEnv("curl -sS -m 20 -o /dev/null -w '%{http_code}' http://deb.debian.org:8080/"))
		assert.Equal(t, "403", r.Stdout, "%+v", r)
	})
	t.Run("the proxy ends with the plan's last machine", func(t *testing.T) {
		require.True(t, hostHasProcess(binDir+"/orbctl __orbsim-pkgproxy 198.18.21.1 198.18.21.0/24"))
		s.ok("delete", "-f", "pkgs")
		deadline := time.Now().Add(10 * time.Second)
		for hostHasProcess(binDir+"/orbctl __orbsim-pkgproxy 198.18.21.1 198.18.21.0/24") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		assert.False(t, hostHasProcess(binDir+"/orbctl __orbsim-pkgproxy 198.18.21.1 198.18.21.0/24"), "still running 10 s after")
	})
}

func TestPackageAccessKnob(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	files := "ls /etc/apt/apt.conf.d/80orbsim-proxy /etc/xdg/pip/pip.conf 2>/dev/null; grep -h _proxy= /etc/environment"
	t.Run("ORBSIM_PACKAGES=0: nothing is configured", func(t *testing.T) {
		s.with("ORBSIM_PACKAGES=0").machine("off")
		r := s.orbctl("run", "-m", "off", "sh", "-c", files)
		assert.Equal(t, result{"", "", 1}, r)
	})
	t.Run("the next start without the knob configures the machine, for its version's gateway", func(t *testing.T) {
		s.ok("stop", "off")
		s.with("ORBSIM_VERSION=1.11.3").ok("start", "off")
		out := s.ok("run", "-m", "off", "sh", "-c", files+"; cat /etc/apt/apt.conf.d/80orbsim-proxy")
		assert.Contains(t, out, "/etc/apt/apt.conf.d/80orbsim-proxy\n/etc/xdg/pip/pip.conf\nhttp_proxy=\"http://198.19.249.1:3142/\"\n")
		assert.Contains(t, out, "Acquire::http::Proxy \"http://198.19.249.1:3142/\";")
	})
	t.Run("ORBSIM_PACKAGES=0 at a restart removes it again", func(t *testing.T) {
		s.with("ORBSIM_PACKAGES=0").ok("restart", "off")
		r := s.orbctl("run", "-m", "off", "sh", "-c", files)
		assert.Equal(t, result{"", "", 1}, r)
	})
	t.Run("a bad value is refused before anything starts", func(t *testing.T) {
		r := s.with("ORBSIM_PACKAGES=yes").orbctl("create", "debian", "bad")
		assert.Equal(t, result{"", "[-32098] create 'bad': ORBSIM_PACKAGES=yes: use 1 (machines reach the package registries; the default) or 0 (they do not)\n", 1}, r)
	})
}
