//go:build linux

// Package pkgproxy gives simulator machines the package registries the host
// reaches, and nothing else: an HTTP proxy on the bridge's gateway address
// (one per address plan in use), run by the simulator in the host's network
// namespace, that forwards plain HTTP to and tunnels HTTPS (CONNECT) to an
// allowlist of registry hosts, and refuses every other destination before
// resolving or dialling it. Each machine is pointed at it the way a user
// points a machine at a LAN package cache: apt.conf.d, pip.conf, npmrc and
// /etc/environment (config.go). docs/simulator.md, "Package access".
package pkgproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/netsim"
	"golang.org/x/sys/unix"
)

const (
	// Command is the hidden subcommand (argv[1]) that runs a proxy.
	Command = "__orbsim-pkgproxy"
	// Port is where the proxy listens on each gateway: apt-cacher-ng's
	// port, as for a LAN package cache.
	Port = 3142
	// Knob turns package access off (0) or on (1, the default).
	Knob = "ORBSIM_PACKAGES"
	// idleGrace is how long a proxy outlives the last running machine of
	// its plan.
	idleGrace   = 3 * time.Second
	dialTimeout = 30 * time.Second
)

// Enabled reads the knob: on unless ORBSIM_PACKAGES=0. Any other value
// than 0 or 1 is an error that says so.
func Enabled() (bool, error) {
	switch v := os.Getenv(Knob); v {
	case "", "1":
		return true, nil
	case "0":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%s: use 1 (machines reach the package registries; the default) or 0 (they do not)", Knob, v)
	}
}

// registryHosts are the registries every machine may reach: Debian's
// archive and security mirrors (apt), PyPI's index and files (pip), npm's
// registry. The hosts of the host's own enabled apt sources are added
// (AllowedHosts): machines run the host's userland, so they use its sources.
var registryHosts = []string{
	"deb.debian.org", "security.debian.org",
	"pypi.org", "files.pythonhosted.org",
	"registry.npmjs.org",
}

// AllowedHosts is the allowlist: registryHosts and the hosts of the enabled
// apt sources under root (the host's "/").
func AllowedHosts(root string) []string {
	set := map[string]bool{}
	for _, h := range registryHosts {
		set[h] = true
	}
	for _, h := range aptSourceHosts(root) {
		set[h] = true
	}
	hosts := make([]string, 0, len(set))
	for h := range set {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// aptSourceHosts reads sources.list, sources.list.d/*.list (one-line
// format) and sources.list.d/*.sources (deb822, skipping "Enabled: no"
// stanzas) for the hosts of their http(s) URIs.
func aptSourceHosts(root string) []string {
	var uris []string
	dir := filepath.Join(root, "etc/apt")
	lists, _ := filepath.Glob(filepath.Join(dir, "sources.list.d", "*.list"))
	for _, f := range append([]string{filepath.Join(dir, "sources.list")}, lists...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) < 2 || (fields[0] != "deb" && fields[0] != "deb-src") {
				continue
			}
			i := 1
			if strings.HasPrefix(fields[1], "[") { // [arch=amd64 signed-by=...]
				for i < len(fields) && !strings.HasSuffix(fields[i], "]") {
					i++
				}
				i++
			}
			if i < len(fields) {
				uris = append(uris, fields[i])
			}
		}
	}
	sources, _ := filepath.Glob(filepath.Join(dir, "sources.list.d", "*.sources"))
	for _, f := range sources {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var found []string
			enabled := true
			for _, line := range strings.Split(stanza, "\n") {
				k, v, ok := strings.Cut(line, ":")
				if !ok || strings.HasPrefix(line, "#") {
					continue
				}
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "uris":
					found = append(found, strings.Fields(v)...)
				case "enabled":
					enabled = strings.TrimSpace(strings.ToLower(v)) != "no"
				}
			}
			if enabled {
				uris = append(uris, found...)
			}
		}
	}
	var hosts []string
	for _, u := range uris {
		p, err := url.Parse(u)
		if err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Hostname() != "" {
			hosts = append(hosts, strings.ToLower(p.Hostname()))
		}
	}
	return hosts
}

// Proxy is the HTTP handler: a forward proxy to allowed hosts only.
type Proxy struct {
	allowed map[string]bool
	list    string // for messages
	fwd     *httputil.ReverseProxy
	log     *log.Logger
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New makes a proxy to hosts, logging one line per request to logTo.
func New(hosts []string, logTo io.Writer) *Proxy {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	p := &Proxy{allowed: map[string]bool{}, list: strings.Join(hosts, ", "), log: log.New(logTo, "", log.LstdFlags),
		dial: dialer.DialContext}
	for _, h := range hosts {
		p.allowed[strings.ToLower(h)] = true
	}
	transport := &http.Transport{
		Proxy:                 nil, // straight to the registry, whatever this process's environment says
		DialContext:           p.dial,
		DisableCompression:    true, // bytes pass as the registry sends them
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       60 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	p.fwd = &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.Out.Host = r.In.Host },
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.log.Printf("%s %s %s: 502 %v", r.RemoteAddr, r.Method, r.URL, err)
			http.Error(w, fmt.Sprintf("orbsim package proxy: %s: %v", r.URL.Host, err), http.StatusBadGateway)
		},
	}
	return p
}

// allow reports whether host:port is a registry on the port its scheme
// uses (80 for http, 443 for CONNECT); everything else is refused before
// any lookup or connection.
func (p *Proxy) allow(host, port, want string) bool {
	return p.allowed[strings.TrimSuffix(strings.ToLower(host), ".")] && port == want
}

func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, dest string) {
	p.log.Printf("%s %s %s: 403 refused", r.RemoteAddr, r.Method, dest)
	http.Error(w, fmt.Sprintf("orbsim package proxy: %s is not a package registry; machines reach only %s "+
		"(docs/simulator.md, \"Package access\")", dest, p.list), http.StatusForbidden)
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		host, port, err := net.SplitHostPort(r.Host)
		if err != nil || !p.allow(host, port, "443") {
			p.refuse(w, r, r.Host)
			return
		}
		p.tunnel(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		http.Error(w, "orbsim package proxy: this is an HTTP proxy for package registries; "+
			"send it absolute http:// URLs or CONNECT host:443", http.StatusBadRequest)
		return
	}
	port := r.URL.Port()
	if port == "" {
		port = "80"
	}
	if !p.allow(r.URL.Hostname(), port, "80") {
		p.refuse(w, r, r.URL.Host)
		return
	}
	p.log.Printf("%s %s %s", r.RemoteAddr, r.Method, r.URL)
	p.fwd.ServeHTTP(w, r)
}

// tunnel answers an allowed CONNECT: the client's TLS goes to the registry
// untouched.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request) {
	up, err := p.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		p.log.Printf("%s CONNECT %s: 502 %v", r.RemoteAddr, r.Host, err)
		http.Error(w, fmt.Sprintf("orbsim package proxy: %s: %v", r.Host, err), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "orbsim package proxy: cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.log.Printf("%s CONNECT %s", r.RemoteAddr, r.Host)
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		conn.Close()
		up.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client -> registry, starting with what the server already buffered
		defer wg.Done()
		io.Copy(up, io.MultiReader(io.LimitReader(buf.Reader, int64(buf.Reader.Buffered())), conn))
		if c, ok := up.(*net.TCPConn); ok {
			c.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		io.Copy(conn, up)
		if c, ok := conn.(*net.TCPConn); ok {
			c.CloseWrite()
		}
	}()
	wg.Wait()
	conn.Close()
	up.Close()
}

func lockPath(gw netip.Addr) string {
	return filepath.Join(netsim.Registry(), "pkgproxy-"+gw.String()+".lock")
}

// LogPath is the proxy's log: one line per request, refusals included.
func LogPath(gw netip.Addr) string {
	return filepath.Join(netsim.Registry(), "pkgproxy-"+gw.String()+".log")
}

// Address is where machines of the plan with gateway gw find the proxy.
func Address(gw netip.Addr) string { return net.JoinHostPort(gw.String(), strconv.Itoa(Port)) }

// Ensure makes sure a proxy serves the plan whose gateway is gw and whose
// machines are in machines (a running machine of it holds a lease: the
// proxy lives until none does). It starts one, detached, if none runs.
func Ensure(gw netip.Addr, machines netip.Prefix) error {
	if err := os.MkdirAll(netsim.Registry(), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(lockPath(gw), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	free := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
	f.Close() // drops the lock if we took it
	if free {
		reply, err := spawn(gw, machines)
		if err != nil {
			return err
		}
		if reply == "ok" {
			return nil
		}
		if reply != "busy" {
			return errors.New(reply)
		}
	}
	// Another proxy holds the lock: it listens, or is about to.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", Address(gw), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the package proxy of %s does not answer on %s: %v", gw, Address(gw), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spawn starts `orbctl __orbsim-pkgproxy GW PREFIX` in a session of its own
// (it outlives this orbctl), its output to LogPath, and returns its first
// word: "ok" (listening), "busy" (another proxy took the lock first) or why
// it could not start.
func spawn(gw netip.Addr, machines netip.Prefix) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	logf, err := os.OpenFile(LogPath(gw), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer pr.Close()
	cmd := exec.Command(self, Command, gw.String(), machines.String())
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	// No proxy variables: the proxy goes to the registries directly.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return "", fmt.Errorf("start the package proxy: %w", err)
	}
	pw.Close()
	done := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		done <- strings.TrimSpace(line)
	}()
	var reply string
	select {
	case reply = <-done:
	case <-time.After(10 * time.Second):
		reply = "the package proxy did not start within 10 s; see " + LogPath(gw)
	}
	if reply != "ok" {
		cmd.Process.Kill()
		cmd.Wait()
		if reply == "" {
			reply = "the package proxy exited before it listened; see " + LogPath(gw)
		}
		if reply == "busy" {
			return reply, nil
		}
		return "", errors.New(reply)
	}
	cmd.Process.Release() // not ours to wait for
	return reply, nil
}

// Main is the proxy process: `orbctl __orbsim-pkgproxy GATEWAY PREFIX`,
// started by Ensure with its readiness pipe as fd 3. It holds the gateway's
// lock while it lives and exits idleGrace after no running machine holds an
// address in PREFIX.
func Main(args []string) int {
	ready := os.NewFile(3, "ready")
	say := func(s string) {
		if ready != nil {
			ready.WriteString(s + "\n")
			ready.Close()
			ready = nil
		}
	}
	if len(args) != 2 {
		say("usage: " + Command + " GATEWAY PREFIX")
		return 2
	}
	gw, err1 := netip.ParseAddr(args[0])
	prefix, err2 := netip.ParsePrefix(args[1])
	if err1 != nil || err2 != nil {
		say(fmt.Sprintf("bad gateway or prefix: %q %q", args[0], args[1]))
		return 2
	}
	lock, err := os.OpenFile(lockPath(gw), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		say(err.Error())
		return 1
	}
	if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		say("busy")
		return 0
	}
	ln, err := net.Listen("tcp", Address(gw))
	if err != nil {
		say(fmt.Sprintf("the package proxy cannot listen on %s: %v", Address(gw), err))
		return 1
	}
	hosts := AllowedHosts("/")
	logger := log.New(os.Stderr, "", log.LstdFlags)
	logger.Printf("orbsim package proxy %d on %s for %s: %s", os.Getpid(), Address(gw), prefix, strings.Join(hosts, ", "))
	srv := &http.Server{Handler: New(hosts, os.Stderr), ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	say("ok")
	idleSince := time.Time{}
	for range time.Tick(500 * time.Millisecond) {
		exited := false
		if netsim.IfUnused(prefix, func() {
			if !idleSince.IsZero() && time.Since(idleSince) >= idleGrace {
				// Under the registry lock: a machine that takes a lease
				// after this finds the gateway's lock free and starts a
				// new proxy.
				ln.Close()
				lock.Close()
				exited = true
			}
		}) {
			if idleSince.IsZero() {
				idleSince = time.Now()
			}
		} else {
			idleSince = time.Time{}
		}
		if exited {
			logger.Printf("orbsim package proxy %d: no machine of %s runs; exiting", os.Getpid(), prefix)
			return 0
		}
	}
	return 0
}
