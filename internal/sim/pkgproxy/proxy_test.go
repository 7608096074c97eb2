//go:build linux

package pkgproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// proxyFor serves a proxy for hosts whose every upstream connection goes to
// upstream (a local server), recording the addresses it was asked to dial.
func proxyFor(t *testing.T, upstream string, hosts ...string) (*httptest.Server, *[]string) {
	p := New(hosts, io.Discard)
	var mu sync.Mutex
	var dialled []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		if upstream == "" {
			return nil, errors.New("no upstream in this test")
		}
		return (&net.Dialer{}).DialContext(ctx, network, upstream)
	}
	p.dial = dial
	p.fwd.Transport.(*http.Transport).DialContext = dial
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv, &dialled
}

func viaProxy(t *testing.T, proxy *httptest.Server) *http.Client {
	u, _ := url.Parse(proxy.URL)
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
}

// connect sends CONNECT target through the proxy and returns the status
// line, the body of a refusal, and the connection (open after a 200).
func connect(t *testing.T, proxy *httptest.Server, target string) (string, string, net.Conn) {
	c, err := net.Dial("tcp", strings.TrimPrefix(proxy.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return resp.Status, string(body), c
	}
	return resp.Status, "", &bufConn{Conn: c, r: br}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func TestEveryOtherDestinationIsRefusedBeforeAnyConnection(t *testing.T) {
	proxy, dialled := proxyFor(t, "", "deb.debian.org", "pypi.org")
	client := viaProxy(t, proxy)
	for _, u := range []string{
		"http://example.com/",
		"http://deb.debian.org:8080/debian/", // a registry host, another port
		"http://93.184.215.14/",              // an address, whatever it serves
		"http://deb.debian.org.evil.example/",
	} {
		resp, err := client.Get(u)
		require.NoError(t, err, u)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, u)
		assert.Contains(t, string(body), "is not a package registry; machines reach only deb.debian.org, pypi.org", u)
	}
	for _, target := range []string{"example.com:443", "pypi.org:22", "127.0.0.1:443", "[::1]:443"} {
		status, body, _ := connect(t, proxy, target)
		assert.Equal(t, "403 Forbidden", status, target)
		assert.Contains(t, body, target+" is not a package registry", target)
	}
	assert.Empty(t, *dialled, "a refused destination is never dialled")

	// Not a proxy request at all.
	resp, err := http.Get(proxy.URL + "/debian/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, string(body), "send it absolute http:// URLs or CONNECT host:443")
}

func TestAllowedHostsAreForwardedAndTunnelled(t *testing.T) {
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Host", r.Host)
		io.WriteString(w, "package bytes for "+r.URL.Path)
	}))
	defer registry.Close()
	proxy, dialled := proxyFor(t, strings.TrimPrefix(registry.URL, "http://"), "deb.debian.org")
	resp, err := viaProxy(t, proxy).Get("http://DEB.debian.org./debian/pool/sl.deb")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "package bytes for /debian/pool/sl.deb", string(body))
	assert.Equal(t, "DEB.debian.org.", resp.Header.Get("X-Seen-Host"), "the registry sees the host asked for")
	assert.Equal(t, []string{"DEB.debian.org.:80"}, *dialled)

	// CONNECT: bytes pass both ways untouched (here, plain HTTP in the tunnel).
	status, _, c := connect(t, proxy, "deb.debian.org:443")
	require.Equal(t, "200 Connection established", status)
	_, err = io.WriteString(c, "GET /tunnelled HTTP/1.1\r\nHost: deb.debian.org\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	got, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	body, _ = io.ReadAll(got.Body)
	assert.Equal(t, "package bytes for /tunnelled", string(body))
}

func TestAllowedHostsReadTheHostsEnabledAptSources(t *testing.T) {
	root := t.TempDir()
	d := filepath.Join(root, "etc/apt/sources.list.d")
	require.NoError(t, os.MkdirAll(d, 0o755))
	write := func(p, s string) { require.NoError(t, os.WriteFile(filepath.Join(root, p), []byte(s), 0o644)) }
	write("etc/apt/sources.list", "# deb http://commented.example/debian bookworm main\n"+
		"deb [arch=amd64 signed-by=/k.gpg] http://mirror.example.org/debian bookworm main\n"+
		"deb-src https://SRC.example.org/debian bookworm main\n")
	write("etc/apt/sources.list.d/extra.sources", "Types: deb\nURIs: http://deb822.example.net/debian http://second.example.net/x\n"+
		"Suites: bookworm\n\nTypes: deb\nURIs: http://disabled.example.net/\nEnabled: no\n")
	write("etc/apt/sources.list.d/off.list.disabled-by-admin", "deb http://ignored.example/ x main\n")
	write("etc/apt/sources.list.d/cdrom.list", "deb cdrom:[Debian]/ bookworm main\n")
	assert.Equal(t, []string{"deb.debian.org", "deb822.example.net", "files.pythonhosted.org", "mirror.example.org",
		"pypi.org", "registry.npmjs.org", "second.example.net", "security.debian.org", "src.example.org"}, AllowedHosts(root))
}

func TestConfigureWritesWhatAUserWouldAndUnconfigureRestores(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc/apt/apt.conf.d", "usr/bin", "usr/etc"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	// python3 is an absolute symlink inside the machine's root.
	require.NoError(t, os.WriteFile(filepath.Join(root, "usr/bin/python3.11"), nil, 0o755))
	require.NoError(t, os.Symlink("/usr/bin/python3.11", filepath.Join(root, "usr/bin/python3")))
	require.NoError(t, os.WriteFile(filepath.Join(root, "usr/bin/npm"), nil, 0o755))
	npmrc, env := "cafile=/etc/ssl/certs/ca-certificates.crt\n", "LANG=C.UTF-8\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, NpmConf), []byte(npmrc), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, Environment), []byte(env), 0o600))
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(root, p)); return string(b) }

	plan := Plan{Gateway: netip.MustParseAddr("192.168.139.1"), Machines: netip.MustParsePrefix("192.168.139.0/24"),
		Relay: netip.MustParsePrefix("192.168.138.0/24")}
	require.NoError(t, Configure(root, plan))
	require.NoError(t, Configure(root, plan)) // at every start: the same files, one block each
	assert.Contains(t, read(AptConf), "Acquire::http::Proxy \"http://192.168.139.1:3142/\";\nAcquire::https::Proxy \"http://192.168.139.1:3142/\";\n")
	assert.Contains(t, read(PipConf), "[global]\nproxy = http://192.168.139.1:3142/\n")
	assert.Equal(t, npmrc+blockStart+"\nproxy=http://192.168.139.1:3142/\nhttps-proxy=http://192.168.139.1:3142/\n"+
		"noproxy=localhost,127.0.0.1,::1,.orb.local,.orb.internal,.local,192.168.139.0/24,192.168.138.0/24\n"+blockEnd+"\n", read(NpmConf))
	assert.Equal(t, 1, strings.Count(read(Environment), blockStart))
	assert.Contains(t, read(Environment), env+blockStart+"\nhttp_proxy=\"http://192.168.139.1:3142/\"\n")
	fi, _ := os.Stat(filepath.Join(root, Environment))
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "a file's mode is kept")

	// A 1.x plan moves every file to its gateway.
	require.NoError(t, Configure(root, Plan{Gateway: netip.MustParseAddr("198.19.249.1"), Machines: netip.MustParsePrefix("198.19.249.0/24")}))
	assert.NotContains(t, read(Environment)+read(NpmConf)+read(AptConf)+read(PipConf), "192.168.139.1")

	require.NoError(t, Unconfigure(root))
	assert.NoFileExists(t, filepath.Join(root, AptConf))
	assert.NoFileExists(t, filepath.Join(root, PipConf))
	assert.Equal(t, npmrc, read(NpmConf))
	assert.Equal(t, env, read(Environment))

	// A file of the user's own at our path is left alone.
	require.NoError(t, os.WriteFile(filepath.Join(root, AptConf), []byte("Acquire::Retries 3;\n"), 0o644))
	require.NoError(t, Unconfigure(root))
	assert.Equal(t, "Acquire::Retries 3;\n", read(AptConf))
}

func TestConfigureSkipsWhatTheMachineDoesNotHave(t *testing.T) {
	root := t.TempDir() // an alpine-like root: no apt, no python3, no npm
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	require.NoError(t, Configure(root, Plan{Gateway: netip.MustParseAddr("198.19.249.1"), Machines: netip.MustParsePrefix("198.19.249.0/24")}))
	for _, p := range []string{AptConf, PipConf, NpmConf} {
		assert.NoFileExists(t, filepath.Join(root, p))
	}
	assert.FileExists(t, filepath.Join(root, Environment))
}

func TestKnob(t *testing.T) {
	for v, want := range map[string]bool{"": true, "1": true, "0": false} {
		t.Setenv(Knob, v)
		on, err := Enabled()
		assert.NoError(t, err)
		assert.Equal(t, want, on, v)
	}
	t.Setenv(Knob, "maybe")
	_, err := Enabled()
	assert.EqualError(t, err, "ORBSIM_PACKAGES=maybe: use 1 (machines reach the package registries; the default) or 0 (they do not)")
}
