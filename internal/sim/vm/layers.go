//go:build linux

package vm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hiddenDirs start empty in every machine (overlayfs "opaque" directories):
// the host's homes, temp files and mounts must not show through the base
// root, and neither must any simulator state living below them.
var hiddenDirs = []string{"/root", "/home", "/tmp", "/var/tmp", "/mnt", "/media", "/run"}

// Layers are a machine's overlayfs directories.
type Layers struct {
	Dir    string
	Base   string // lower layer
	Upper  string
	Work   string
	Merged string
}

// LayersFor names the directories of the machine stored in dir.
func LayersFor(dir, base string) Layers {
	return Layers{Dir: dir, Base: base, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Merged: filepath.Join(dir, "merged")}
}

// mkdirLike creates rel inside upper, copying mode and owner of each
// component from base so the merged view keeps the base's permissions.
func (l Layers) mkdirLike(rel string) (string, error) {
	cur := l.Upper
	baseCur := l.Base
	for _, c := range strings.Split(strings.Trim(filepath.Clean(rel), "/"), "/") {
		if c == "" {
			continue
		}
		cur = filepath.Join(cur, c)
		baseCur = filepath.Join(baseCur, c)
		if _, err := os.Lstat(cur); err == nil {
			continue
		}
		mode, uid, gid := os.FileMode(0o755), 0, 0
		var st unix.Stat_t
		if unix.Stat(baseCur, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			mode = os.FileMode(st.Mode & 0o7777)
			uid, gid = int(st.Uid), int(st.Gid)
		}
		if err := os.Mkdir(cur, 0o700); err != nil {
			return "", err
		}
		os.Lchown(cur, uid, gid)
		unix.Chmod(cur, uint32(mode))
	}
	return cur, nil
}

// hide makes rel an opaque directory: the base's content below it vanishes.
func (l Layers) hide(rel string) error {
	p, err := l.mkdirLike(rel)
	if err != nil {
		return err
	}
	return unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0)
}

// writeFile writes rel in the upper layer (copying the base's mode/owner if
// it exists there, else using mode).
func (l Layers) writeFile(rel string, data []byte, mode os.FileMode) error {
	if _, err := l.mkdirLike(filepath.Dir(rel)); err != nil {
		return err
	}
	p := filepath.Join(l.Upper, rel)
	uid, gid := 0, 0
	var st unix.Stat_t
	if unix.Stat(filepath.Join(l.Base, rel), &st) == nil {
		mode, uid, gid = os.FileMode(st.Mode&0o7777), int(st.Uid), int(st.Gid)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	os.Chown(p, uid, gid)
	return os.Chmod(p, mode)
}

// read returns rel as the machine sees it (upper first, then base).
func (l Layers) read(rel string) []byte {
	if b, err := os.ReadFile(filepath.Join(l.Upper, rel)); err == nil {
		return b
	}
	b, _ := os.ReadFile(filepath.Join(l.Base, rel))
	return b
}

// Prepare lays out a new machine's upper layer: hidden directories, the
// hostname, and the default user (passwd/group/shadow entries, a home with
// the skeleton files, passwordless sudo). hideAlso lists extra host paths to
// hide (the simulator's own state directory).
func (l Layers) Prepare(name, user, adminGroup string, hideAlso []string) error {
	for _, d := range []string{l.Upper, l.Work, l.Merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, d := range append(append([]string{}, hiddenDirs...), hideAlso...) {
		if err := l.hide(d); err != nil {
			return fmt.Errorf("hide %s: %w", d, err)
		}
	}
	// No /mnt/mac here: the init creates it for machines that mount the
	// host, and isolated machines have none at all (§7, [DOCS]).
	l.mkdirLike("/opt/orbstack-guest")
	if err := l.writeFile("/etc/hostname", []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	if err := l.writeFile("/etc/hosts", []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"), 0o644); err != nil {
		return err
	}
	if err := l.copySkel("/root", 0, 0, 0o700); err != nil {
		return err
	}
	return l.AddUser(user, adminGroup)
}

// AdminGroup is the group OrbStack puts the default user in (§10, GH#583,
// #2197): sudo on Debian and Ubuntu, wheel elsewhere. Devuan and Kali are
// Debian's family and get sudo too (our reading).
func AdminGroup(distro string) string {
	switch distro {
	case "debian", "ubuntu", "devuan", "kali":
		return "sudo"
	}
	return "wheel"
}

// AddUser makes user exist with a home, membership of adminGroup and
// passwordless sudo (no-op for an account the base already has, apart from
// the home, the group and the sudo rule).
func (l Layers) AddUser(user, adminGroup string) error {
	if user == "root" {
		return nil
	}
	passwd := string(l.read("/etc/passwd"))
	group := string(l.read("/etc/group"))
	home := "/home/" + user
	uid, gid := -1, -1
	for _, line := range strings.Split(passwd, "\n") {
		p := strings.Split(line, ":")
		if len(p) >= 7 && p[0] == user {
			uid, _ = strconv.Atoi(p[2])
			gid, _ = strconv.Atoi(p[3])
			home = p[5]
		}
	}
	if uid < 0 {
		// 501 is the first uid on macOS, which OrbStack mirrors.
		uid = firstFree(passwd, 2, 501)
		gid = uid
		if used(group, 2, gid) {
			gid = firstFree(group, 2, uid)
		}
		shell := "/bin/sh"
		if _, err := os.Stat(filepath.Join(l.Base, "bin/bash")); err == nil {
			shell = "/bin/bash"
		}
		passwd = strings.TrimRight(passwd, "\n") + fmt.Sprintf("\n%s:x:%d:%d:%s:%s:%s\n", user, uid, gid, user, home, shell)
		group = strings.TrimRight(group, "\n") + fmt.Sprintf("\n%s:x:%d:\n", user, gid)
		shadow := strings.TrimRight(string(l.read("/etc/shadow")), "\n") + fmt.Sprintf("\n%s:*:19000:0:99999:7:::\n", user)
		if err := l.writeFile("/etc/passwd", []byte(passwd), 0o644); err != nil {
			return err
		}
		if err := l.writeFile("/etc/group", []byte(group), 0o644); err != nil {
			return err
		}
		if err := l.writeFile("/etc/shadow", []byte(shadow), 0o640); err != nil {
			return err
		}
	}
	if err := l.copySkel(home, uid, gid, 0o755); err != nil {
		return err
	}
	if adminGroup != "" {
		if err := l.writeFile("/etc/group", []byte(withMember(string(l.read("/etc/group")), adminGroup, user)), 0o644); err != nil {
			return err
		}
	}
	rule := fmt.Sprintf("# written by orbsim: OrbStack's default user has passwordless sudo\n%s ALL=(ALL) NOPASSWD:ALL\n", user)
	return l.writeFile("/etc/sudoers.d/orbsim-"+strings.ReplaceAll(user, ".", "_"), []byte(rule), 0o440)
}

// withMember is the group file db with user a member of name, adding the
// group (gid 27 for sudo and 10 for wheel, as Debian and Fedora number them,
// when free) if the base has none.
func withMember(db, name, user string) string {
	lines := strings.Split(strings.TrimRight(db, "\n"), "\n")
	for i, line := range lines {
		p := strings.Split(line, ":")
		if len(p) != 4 || p[0] != name {
			continue
		}
		members := []string{}
		for _, m := range strings.Split(p[3], ",") {
			if m == user {
				return db
			}
			if m != "" {
				members = append(members, m)
			}
		}
		p[3] = strings.Join(append(members, user), ",")
		lines[i] = strings.Join(p, ":")
		return strings.Join(lines, "\n") + "\n"
	}
	gid := map[string]int{"sudo": 27, "wheel": 10}[name]
	if gid == 0 || used(db, 2, gid) {
		gid = firstFree(db, 2, 100)
	}
	return strings.Join(append(lines, fmt.Sprintf("%s:x:%d:%s", name, gid, user)), "\n") + "\n"
}

func used(db string, field, id int) bool {
	for _, line := range strings.Split(db, "\n") {
		p := strings.Split(line, ":")
		if len(p) > field {
			if n, err := strconv.Atoi(p[field]); err == nil && n == id {
				return true
			}
		}
	}
	return false
}

func firstFree(db string, field, from int) int {
	for n := from; ; n++ {
		if !used(db, field, n) {
			return n
		}
	}
}

// copySkel creates home in the upper layer (if missing) with /etc/skel's files.
func (l Layers) copySkel(home string, uid, gid int, mode os.FileMode) error {
	if _, err := l.mkdirLike(filepath.Dir(home)); err != nil {
		return err
	}
	dst := filepath.Join(l.Upper, home)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.Mkdir(dst, mode); err != nil {
		return err
	}
	os.Chown(dst, uid, gid)
	os.Chmod(dst, mode)
	skel := filepath.Join(l.Base, "etc/skel")
	entries, _ := os.ReadDir(skel)
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(skel, e.Name()), filepath.Join(dst, e.Name()), uid, gid); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, uid, gid int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, _ := in.Stat()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	out.Close()
	return os.Chown(dst, uid, gid)
}

// diskSizeTTL bounds how stale a reported disk size may be. Walking a
// large upper layer takes a while (0.3 s for 70k files), and callers like
// pyinfra ask for `info` often.
const diskSizeTTL = 10 * time.Second

// DiskSize is the bytes the machine's own layer uses (cached for diskSizeTTL).
func DiskSize(dir string) uint64 {
	cache := filepath.Join(dir, "disk_size")
	if fi, err := os.Stat(cache); err == nil && time.Since(fi.ModTime()) < diskSizeTTL {
		if b, err := os.ReadFile(cache); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				return n
			}
		}
	}
	var total uint64
	filepath.Walk(filepath.Join(dir, "upper"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += uint64(st.Blocks) * 512
			}
		}
		return nil
	})
	tmp := fmt.Sprintf("%s.%d", cache, os.Getpid())
	if os.WriteFile(tmp, []byte(strconv.FormatUint(total, 10)), 0o644) == nil {
		os.Rename(tmp, cache)
	}
	return total
}
