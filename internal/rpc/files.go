package rpc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// putScript runs inside the machine with the file on stdin. The destination
// ($1) and mode ($2) are arguments, never interpolated into the script. It
// writes a private temp file next to the destination, gives it the existing
// destination's mode and owner (or the umask's default), applies the requested
// mode and renames it into place, so the destination is replaced whole or not
// at all; the trap removes the temp file on any failure.
const putScript = `set -e
dest=$1 mode=$2
if [ -d "$dest" ]; then echo "$dest: is a directory" >&2; exit 1; fi
tmp=$(mktemp "$(dirname -- "$dest")/.pyinfra-orbstack.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
if [ -e "$dest" ]; then
  chmod "$(stat -L -c %a -- "$dest")" -- "$tmp"
  chown "$(stat -L -c %u:%g -- "$dest")" -- "$tmp" 2>/dev/null || true
else
  chmod "$(printf %o $((0666 & ~0$(umask))))" -- "$tmp"
fi
if [ -n "$mode" ]; then chmod "$mode" -- "$tmp"; fi
mv -f -- "$tmp" "$dest"
trap - EXIT
`

// getScript streams the remote file to stdout.
const getScript = `exec cat -- "$1"`

var octalMode = regexp.MustCompile(`^[0-7]{3,4}$`)

func checkRemotePath(param, p string) error {
	if p == "" || p == "--" {
		return invalidParams(param, "%s must be a file path, got %q", param, p)
	}
	return nil
}

func checkLocalPath(param, p string) error {
	if !filepath.IsAbs(p) {
		return invalidParams(param, "%s must be an absolute path, got %q", param, p)
	}
	return nil
}

// remoteFailure explains a failed transfer with the machine's own words.
func remoteFailure(machine, what string, code int, stderr string) error {
	msg := strings.TrimSpace(stderr)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", code)
	}
	return ioError(machine, fmt.Sprintf("%s on %s failed: %s", what, machine, msg))
}

func (s *Server) filePut(ctx context.Context, p FilePutParams) (any, error) {
	if p.Machine == "" {
		return nil, invalidParams("machine", "file.put needs a machine name")
	}
	if err := checkLocalPath("local_path", p.LocalPath); err != nil {
		return nil, err
	}
	if err := checkRemotePath("remote_path", p.RemotePath); err != nil {
		return nil, err
	}
	if p.Mode != "" && !octalMode.MatchString(p.Mode) {
		return nil, invalidParams("mode", "mode must be an octal string such as \"644\", got %q", p.Mode)
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p.LocalPath)
	if err != nil {
		return nil, ioError(p.Machine, fmt.Sprintf("cannot read the local file: %v", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil, ioError(p.Machine, fmt.Sprintf("local_path %s is not a regular file", p.LocalPath))
	}
	var stderr bytes.Buffer
	// An *os.File as stdin is handed to orbctl as its fd: the bytes never pass
	// through this process.
	code, err := c.Run(ctx, orbctl.RunSpec{
		Machine: p.Machine, User: p.User, Argv: []string{"sh", "-c", putScript, "sh", p.RemotePath, p.Mode},
		Stdin: f, Stderr: &stderr,
	})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, remoteFailure(p.Machine, "writing "+p.RemotePath, code, stderr.String())
	}
	return FileResult{Size: fi.Size()}, nil
}

func (s *Server) fileGet(ctx context.Context, p FileGetParams) (any, error) {
	if p.Machine == "" {
		return nil, invalidParams("machine", "file.get needs a machine name")
	}
	if err := checkRemotePath("remote_path", p.RemotePath); err != nil {
		return nil, err
	}
	if err := checkLocalPath("local_path", p.LocalPath); err != nil {
		return nil, err
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	// A temp name of our own next to the destination (so the rename stays on
	// one file system): a fixed "local_path.part" could be a user's file.
	// CreateTemp makes it 0600.
	dir, base := filepath.Split(p.LocalPath)
	f, err := os.CreateTemp(dir, "."+base+".*.part")
	if err != nil {
		return nil, ioError(p.Machine, fmt.Sprintf("cannot write the local file: %v", err))
	}
	part := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(part)
		}
	}()
	var stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{
		Machine: p.Machine, User: p.User, Argv: []string{"sh", "-c", getScript, "sh", p.RemotePath},
		Stdout: f, Stderr: &stderr,
	})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, remoteFailure(p.Machine, "reading "+p.RemotePath, code, stderr.String())
	}
	fi, err := f.Stat()
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(part, p.LocalPath)
	}
	if err != nil {
		return nil, ioError(p.Machine, fmt.Sprintf("cannot write the local file: %v", err))
	}
	ok = true
	return FileResult{Size: fi.Size()}, nil
}
