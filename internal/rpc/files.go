package rpc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/session"
)

// putScript runs inside the machine as `sh -c putScript pyinfra-orbstack-put
// NONCE DEST SIZE` with the file's SIZE bytes on stdin. The destination is an
// argument, never interpolated into the script. It writes a private temp file
// next to the destination, checks that all SIZE bytes arrived (stdin ends
// early when the binary dies or the transfer is cut: then the destination is
// left as it was), gives it the existing destination's mode and owner (or the
// umask's default) and renames it into place, so the destination is replaced
// whole or not at all.
// The traps remove the temp file on any failure the script lives through; for
// those it does not (the machine stopped mid-transfer), it notes the temp file
// in the user's journal (session.JournalDir) as "PID NONCE PATH" until the
// rename (the journal directory is made first, so that the note follows the
// temp file's creation as closely as a shell allows: a stop in between would
// leave a temp file nobody noted), and the next session agent of that user removes it once PID no
// longer runs with NONCE (internal/session, sweepScript).
const putScript = `set -e
n=$1 dest=$2 size=$3
if [ -d "$dest" ]; then echo "$dest: is a directory" >&2; exit 1; fi
e= j=` + session.JournalDir + `
if { [ -d "$j" ] || mkdir -m 700 "$j"; } 2>/dev/null && [ ! -L "$j" ] && [ -O "$j" ]; then e=$j/$n; fi
tmp=$(mktemp "$(dirname -- "$dest")/.pyinfra-orbstack.XXXXXX")
[ -z "$e" ] || printf '%s %s %s\n' "$$" "$n" "$tmp" >"$e" 2>/dev/null || e=
trap 'rm -f -- "$tmp"; [ -z "$e" ] || rm -f -- "$e"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE
cat > "$tmp"
got=$(($(wc -c <"$tmp")))
if [ "$got" -ne "$size" ]; then
  echo "the upload was cut short ($got of $size bytes arrived); $dest was left as it was" >&2; exit 1
fi
` + replaceScript

// replaceScript ends putScript and the escalated copy alike: it gives the
// complete temp file the existing destination's mode and owner (or the
// umask's default for a new file), renames it over the destination and drops
// its journal note. It expects $tmp, $dest and $e (the note, or empty).
const replaceScript = `if [ -e "$dest" ]; then
  chmod "$(stat -L -c %a -- "$dest")" -- "$tmp"
  chown "$(stat -L -c %u:%g -- "$dest")" -- "$tmp" 2>/dev/null || true
else
  chmod "$(printf %o $((0666 & ~0$(umask))))" -- "$tmp"
fi
mv -f -- "$tmp" "$dest"
trap - EXIT
[ -z "$e" ] || rm -f -- "$e"
`

// getScript streams the remote file to stdout.
const getScript = `exec cat -- "$1"`

// maxSizelessFile bounds what file.put reads into memory from a local file
// that reports size 0 (/proc files do), to learn its real size.
const maxSizelessFile = 64 << 20

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
	return ioError(machine, remoteMessage(machine, what, code, stderr))
}

func remoteMessage(machine, what string, code int, stderr string) string {
	msg := strings.TrimSpace(stderr)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", code)
	}
	if code > 128 && code < 160 { // killed by a signal, as a shell reports it
		msg += fmt.Sprintf(" (killed by signal %d: was machine %s stopped, restarted or deleted?)", code-128, machine)
	}
	return fmt.Sprintf("%s on %s failed: %s", what, machine, msg)
}

// CheckPutParams checks file.put's params as the binary does before any
// work; the relay (internal/remote) checks with it too.
func CheckPutParams(p FilePutParams) error {
	if p.Machine != "" {
		if err := checkLocalPath("local_path", p.LocalPath); err != nil {
			return err
		}
	}
	return checkTransfer(MethodFilePut, p.Machine, p.RemotePath, p.Escalation)
}

// CheckGetParams checks file.get's params as the binary does before any work.
func CheckGetParams(p FileGetParams) error {
	if p.Machine != "" && checkRemotePath("remote_path", p.RemotePath) == nil {
		if err := checkLocalPath("local_path", p.LocalPath); err != nil {
			return err
		}
	}
	return checkTransfer(MethodFileGet, p.Machine, p.RemotePath, p.Escalation)
}

// checkTransfer checks the params a transfer has wherever its local end is.
func checkTransfer(method, machine, remotePath string, e *Escalation) error {
	if machine == "" {
		return invalidParams("machine", "%s needs a machine name", method)
	}
	if err := checkRemotePath("remote_path", remotePath); err != nil {
		return err
	}
	if e != nil {
		return checkEscalation(e)
	}
	return nil
}

func (s *Server) filePut(ctx context.Context, p FilePutParams) (any, error) {
	if err := CheckPutParams(p); err != nil {
		return nil, err
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	body, size, done, err := OpenLocal(p.Machine, p.LocalPath)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.put(ctx, c, p, body, size)
}

// OpenLocal opens the local file of a put: its bytes and their count. The
// bytes go through a pipe from this process (not orbctl reading the file
// itself), so that if the binary dies the machine sees the input end and
// putScript keeps the old destination; exactly size bytes go, so a file that
// changes meanwhile fails the size check instead of landing half-written.
// done closes the file.
func OpenLocal(machine, localPath string) (body io.Reader, size int64, done func(), err error) {
	f, err := os.Open(localPath)
	if err != nil {
		return nil, 0, nil, ioError(machine, fmt.Sprintf("cannot read the local file: %v", err))
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, nil, ioError(machine, fmt.Sprintf("local_path %s is not a regular file", localPath))
	}
	size = fi.Size()
	body = io.LimitReader(f, size)
	if size == 0 { // maybe a file that does not know its size (/proc)
		data, err := io.ReadAll(io.LimitReader(f, maxSizelessFile+1))
		if err != nil {
			f.Close()
			return nil, 0, nil, ioError(machine, fmt.Sprintf("cannot read the local file: %v", err))
		}
		if len(data) > maxSizelessFile {
			f.Close()
			return nil, 0, nil, ioError(machine, fmt.Sprintf("local_path %s reports size 0 but holds more than %d bytes", localPath, maxSizelessFile))
		}
		size, body = int64(len(data)), bytes.NewReader(data)
	}
	return body, size, func() { f.Close() }, nil
}

// put writes size bytes from body to p.RemotePath in the machine (p.LocalPath
// is not read): file.put's and the transfer subcommand's remote half.
func (s *Server) put(ctx context.Context, c *orbctl.Client, p FilePutParams, body io.Reader, size int64) (any, error) {
	if p.Escalation != nil {
		return s.putEscalated(ctx, c, p, body, size)
	}
	var stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{
		Machine: p.Machine, User: p.User,
		Argv:  []string{"sh", "-c", putScript, "pyinfra-orbstack-put", newNonce(), p.RemotePath, strconv.FormatInt(size, 10)},
		Stdin: body, Stderr: &stderr,
	})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, remoteFailure(p.Machine, "writing "+p.RemotePath, code, stderr.String())
	}
	return FileResult{Size: size}, nil
}

// PartPattern is the name file.get gives its temp file next to local_path
// until it is complete, for os.CreateTemp: the pid of the binary lets a
// client remove the parts of a binary that died mid-download, and nothing
// else (docs/protocol.md).
func PartPattern(base string, pid int) string {
	return "." + base + ".pyinfra-orbstack-" + strconv.Itoa(pid) + "-*.part"
}

func newNonce() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // documented never to fail on Linux/macOS
	}
	return hex.EncodeToString(b)
}

// pipedFile hides an *os.File from exec.Cmd, which would hand the file to
// orbctl as its stdout: the bytes then come through a pipe from this process,
// so that if the binary dies orbctl's next write fails and the download stops
// instead of running on to the end.
type pipedFile struct{ f *os.File }

func (w pipedFile) Write(p []byte) (int, error) { return w.f.Write(p) }

func (s *Server) fileGet(ctx context.Context, p FileGetParams) (any, error) {
	if err := CheckGetParams(p); err != nil {
		return nil, err
	}
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	size, err := Download(p.Machine, p.LocalPath, func(w io.Writer) error { return s.get(ctx, c, p, w) })
	if err != nil {
		return nil, err
	}
	return FileResult{Size: size}, nil
}

// get streams p.RemotePath from the machine to out: file.get's and the
// transfer subcommand's remote half.
func (s *Server) get(ctx context.Context, c *orbctl.Client, p FileGetParams, out io.Writer) error {
	if p.Escalation != nil {
		return s.getEscalated(ctx, c, p, out)
	}
	var stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{
		Machine: p.Machine, User: p.User, Argv: []string{"sh", "-c", getScript, "sh", p.RemotePath},
		Stdout: out, Stderr: &stderr,
	})
	if err == nil && code != 0 {
		err = remoteFailure(p.Machine, "reading "+p.RemotePath, code, stderr.String())
	}
	return err
}

// Download writes what fill writes into a new part file next to localPath
// (PartPattern, this process's pid) and renames it to localPath when fill
// succeeds; on any failure the part file is removed. fill's writer is a
// pipedFile, so that a child process it hands it to writes through a pipe
// from this process. It returns the size written.
func Download(machine, localPath string, fill func(io.Writer) error) (int64, error) {
	// A temp name of our own next to the destination (so the rename stays on
	// one file system): a fixed "local_path.part" could be a user's file.
	// CreateTemp makes it 0600.
	dir, base := filepath.Split(localPath)
	f, err := os.CreateTemp(dir, PartPattern(base, os.Getpid()))
	if err != nil {
		return 0, ioError(machine, fmt.Sprintf("cannot write the local file: %v", err))
	}
	part := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(part)
		}
	}()
	if err := fill(pipedFile{f}); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(part, localPath)
	}
	if err != nil {
		return 0, ioError(machine, fmt.Sprintf("cannot write the local file: %v", err))
	}
	ok = true
	return fi.Size(), nil
}
