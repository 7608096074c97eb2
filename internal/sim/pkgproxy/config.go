//go:build linux

package pkgproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Files a machine gets (under its root), as a user would point a machine at
// a package cache. Each is ours alone (a file) or a managed block between
// blockStart and blockEnd (files a user may also edit).
const (
	AptConf     = "/etc/apt/apt.conf.d/80orbsim-proxy"
	PipConf     = "/etc/xdg/pip/pip.conf" // read by pip before /etc/pip.conf, which stays the user's
	NpmConf     = "/usr/etc/npmrc"        // npm's global config for prefix /usr (Debian's npm)
	Environment = "/etc/environment"
	blockStart  = "# BEGIN orbsim package proxy (managed by orbctl; edits inside are lost)"
	blockEnd    = "# END orbsim package proxy"
	ownMark     = "orbsim package proxy (written by orbctl"
)

// Plan is what Configure needs of a machine's address plan.
type Plan struct {
	Gateway  netip.Addr
	Machines netip.Prefix
	Relay    netip.Prefix // 2.x's NAME.orb.local range; invalid in 1.x
}

func (p Plan) url() string { return "http://" + Address(p.Gateway) + "/" }

// noProxy is what stays off the proxy: the machine itself, other machines,
// the host (host.orb.internal) and the Mac's names.
func (p Plan) noProxy() string {
	n := []string{"localhost", "127.0.0.1", "::1", ".orb.local", ".orb.internal", ".local", p.Machines.String()}
	if p.Relay.IsValid() {
		n = append(n, p.Relay.String())
	}
	return strings.Join(n, ",")
}

// Configure points the machine whose root is root (/proc/PID/root of its
// init) at the proxy of plan: apt (when the machine has /etc/apt), pip (when
// it has python3), npm (when it has npm) and /etc/environment. Files are
// rewritten at every start, so a machine follows its plan's gateway.
func Configure(root string, p Plan) error {
	var errs []error
	if isDir(filepath.Join(root, "etc/apt/apt.conf.d")) {
		errs = append(errs, writeOwn(root, AptConf, fmt.Sprintf(
			"// %s at machine start; ORBSIM_PACKAGES=0 removes it at the next start). docs/simulator.md\n"+
				"Acquire::http::Proxy \"%s\";\nAcquire::https::Proxy \"%s\";\n", ownMark, p.url(), p.url())))
	}
	if exists(root, "usr/bin/python3") {
		errs = append(errs, writeOwn(root, PipConf, fmt.Sprintf(
			"# %s at machine start; ORBSIM_PACKAGES=0 removes it at the next start). docs/simulator.md\n"+
				"[global]\nproxy = %s\n", ownMark, p.url())))
	}
	if exists(root, "usr/bin/npm") {
		errs = append(errs, writeBlock(root, NpmConf, fmt.Sprintf("proxy=%s\nhttps-proxy=%s\nnoproxy=%s\n", p.url(), p.url(), p.noProxy())))
	}
	env := ""
	for _, k := range []string{"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"} {
		env += fmt.Sprintf("%s=\"%s\"\n", k, p.url())
	}
	env += fmt.Sprintf("no_proxy=\"%s\"\nNO_PROXY=\"%s\"\n", p.noProxy(), p.noProxy())
	errs = append(errs, writeBlock(root, Environment, env))
	return errors.Join(errs...)
}

// Unconfigure removes what Configure wrote (ORBSIM_PACKAGES=0): our own
// files only if they are still ours, and the managed blocks.
func Unconfigure(root string) error {
	var errs []error
	for _, f := range []string{AptConf, PipConf} {
		p := filepath.Join(root, f)
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), ownMark) {
			errs = append(errs, os.Remove(p))
		}
	}
	for _, f := range []string{NpmConf, Environment} {
		p := filepath.Join(root, f)
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), blockStart) {
			errs = append(errs, replaceFile(p, withBlock(string(b), ""), 0o644))
		}
	}
	return errors.Join(errs...)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// exists looks rel up under root, following a symlink inside root (a
// machine's /usr/bin/python3 -> python3.11), never out of it.
func exists(root, rel string) bool {
	p := filepath.Join(root, rel)
	for i := 0; i < 8; i++ {
		fi, err := os.Lstat(p)
		if err != nil {
			return false
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return true
		}
		t, err := os.Readlink(p)
		if err != nil {
			return false
		}
		if filepath.IsAbs(t) {
			p = filepath.Join(root, t)
		} else {
			p = filepath.Join(filepath.Dir(p), t)
		}
	}
	return false
}

func writeOwn(root, rel, content string) error {
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if b, err := os.ReadFile(p); err == nil && string(b) == content {
		return nil
	}
	return replaceFile(p, content, 0o644)
}

func writeBlock(root, rel, block string) error {
	p := filepath.Join(root, rel)
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	want := withBlock(string(old), block)
	if string(old) == want {
		return nil
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(p); err == nil {
		mode = fi.Mode().Perm()
	} else if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return replaceFile(p, want, mode)
}

// withBlock is old with its managed block replaced by block (appended at
// the end), or removed when block is "".
func withBlock(old, block string) string {
	var kept []string
	in := false
	for _, line := range strings.Split(strings.TrimSuffix(old, "\n"), "\n") {
		switch {
		case line == blockStart:
			in = true
		case line == blockEnd:
			in = false
		case !in:
			kept = append(kept, line)
		}
	}
	out := strings.Join(kept, "\n")
	if out != "" {
		out += "\n"
	}
	if block != "" {
		out += blockStart + "\n" + block + blockEnd + "\n"
	}
	return out
}

func replaceFile(p, content string, mode os.FileMode) error {
	tmp := p + ".orbsim-tmp"
	if err := os.WriteFile(tmp, []byte(content), mode); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
