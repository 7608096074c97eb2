package rpc

import (
	"bytes"
	"context"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/session"
)

// A transfer with an escalation (file.put/file.get's "escalation" param)
// takes one `orbctl run` as the connector user, whatever the escalation:
//
//   - the staging script reads the client's escalation command from stdin
//     (never an argv on the Mac: it may hold a sudo password), up to a line
//     holding the nonce;
//   - it notes the stage directory in the user's journal, then creates it
//     (mkdir: a directory that exists is an error, never reused), and keeps
//     the note until it is removed (so the next agent of the user removes it if the machine stops
//     midway: session.JournalDir), and for a put receives the file's bytes
//     from the rest of stdin and checks their count;
//   - it writes the target user's script as STAGE/run and runs the escalation
//     command, which runs `sh STAGE/run` as the target user: for a put, a
//     temp file next to the destination, its count checked, renamed over it;
//     for a get, a copy of the source in the stage directory;
//   - it removes the stage directory whatever happens (a trap), and reports
//     how the escalation command ended on stderr, so that the binary can tell
//     the client's escalation failing (sudo wanting a password) from the
//     transfer failing.
//
// The client builds the escalation command with its own tools (pyinfra's
// sudo, su, doas wrapping, askpass passwords included); the binary never
// builds one.

// stageNamePattern is the shape of a stage directory's name: journal sweeps
// remove only directories of this shape.
var stageNamePattern = regexp.MustCompile(`^pyinfra-orbstack-[0-9a-f]{16,64}$`)

// stagePrelude starts both staging scripts, run as `sh -c SCRIPT NAME NONCE
// STAGE ...`: it reads the escalation command, makes and journals the stage
// directory, and defines escalate, which runs the command with stdin from
// /dev/null and the user's own umask (a new destination gets the mode a
// plain put would give it), and reports "NONCE escalated STATUS" on stderr.
const stagePrelude = `n=$1 s=$2 c= ok=
while IFS= read -r l; do
  if [ "$l" = "$n" ]; then ok=1; break; fi
  c="$c$l
"
done
if [ -z "$ok" ]; then echo "pyinfra-orbstack: the request arrived cut short and was not run" >&2; exit 1; fi
u=$(umask)
umask 077
e= j=` + session.JournalDir + `
if { [ -d "$j" ] || mkdir -m 700 "$j"; } 2>/dev/null && [ ! -L "$j" ] && [ -O "$j" ]; then
  e=$j/$n
  printf '%s %s %s\n' "$$" "$n" "$s" >"$e" 2>/dev/null || e=
fi
mkdir -m 700 -- "$s" || { [ -z "$e" ] || rm -f -- "$e"; exit 1; }
trap 'rm -rf -- "$s"; [ -z "$e" ] || rm -f -- "$e"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE
printf '%s %s\n' "$$" "$n" >"$s/owner"
escalate() {
  ( umask "$u"; eval "$c" ) </dev/null
  st=$?
  printf '\n%s escalated %s\n' "$n" "$st" >&2
  return "$st"
}
`

// absoluteDest (and its twin for $src in stagedGetScript) makes a relative
// $dest absolute against the staging script's directory, where orbctl
// started the connector user (its home, as for a plain transfer), before the
// escalation runs: a login escalation (sudo -i, su -l) starts in the target
// user's home, where a relative path would name another file
// (docs/connector.md, "Relative paths").
const absoluteDest = `case $dest in /*) ;; *) dest=${PWD%/}/$dest ;; esac`

// stagedPutScript runs as `sh -c stagedPutScript pyinfra-orbstack-put-as
// NONCE STAGE DEST SIZE RUN` with the escalation command, the nonce line and
// the file's SIZE bytes on stdin; RUN is installScript.
const stagedPutScript = stagePrelude + `dest=$3 size=$4
` + absoluteDest + `
cat >"$s/data"
got=$(($(wc -c <"$s/data")))
if [ "$got" -ne "$size" ]; then
  echo "the upload was cut short ($got of $size bytes arrived); $dest was left as it was" >&2; exit 1
fi
printf '%s' "$dest" >"$s/dest"
printf '%s\n' "$5" >"$s/run"
chmod 644 "$s/data" "$s/dest" "$s/run" "$s/owner"
chmod 711 "$s"
escalate >/dev/null
`

// installScript is STAGE/run of a put, run by the target user as `sh
// STAGE/run`: putScript's second half, from the staged file. Its temp file
// is journaled (as the target user) under the staging script's PID and
// nonce, which live as long as the transfer does.
const installScript = `set -e
s=$(dirname -- "$0")
dest=$(cat -- "$s/dest"; echo x); dest=${dest%x}
read -r p n <"$s/owner"
if [ -d "$dest" ]; then echo "$dest: is a directory" >&2; exit 1; fi
e= j=` + session.JournalDir + `
if { [ -d "$j" ] || mkdir -m 700 "$j"; } 2>/dev/null && [ ! -L "$j" ] && [ -O "$j" ]; then e=$j/$n.install; fi
tmp=$(mktemp "$(dirname -- "$dest")/.pyinfra-orbstack.XXXXXX")
[ -z "$e" ] || printf '%s %s %s\n' "$p" "$n" "$tmp" >"$e" 2>/dev/null || e=
trap 'rm -f -- "$tmp"; [ -z "$e" ] || rm -f -- "$e"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
cat -- "$s/data" >"$tmp"
want=$(($(wc -c <"$s/data"))) got=$(($(wc -c <"$tmp")))
if [ "$got" -ne "$want" ]; then
  echo "copying into place was cut short ($got of $want bytes); $dest was left as it was" >&2; exit 1
fi
` + replaceScript

// stagedGetScript runs as `sh -c stagedGetScript pyinfra-orbstack-get-as
// NONCE STAGE SRC RUN` with the escalation command and the nonce line on
// stdin; RUN is fetchScript. The stage directory is 1733 so that a target
// user other than its owner can create its copy there (with a name mktemp
// chose, in a directory nobody else can list), then the copy goes to stdout.
const stagedGetScript = stagePrelude + `src=$3
case $src in /*) ;; *) src=${PWD%/}/$src ;; esac
printf '%s' "$src" >"$s/src"
printf '%s\n' "$4" >"$s/run"
chmod 644 "$s/src" "$s/run" "$s/owner"
chmod 1733 "$s"
out=$(escalate) || exit $?
name=${out##*
}
case "$name" in out.????????) ;; *) echo "pyinfra-orbstack: the escalated copy named no file" >&2; exit 1 ;; esac
cat -- "$s/$name"
`

// fetchScript is STAGE/run of a get, run by the target user: it copies the
// source into the stage directory, readable by the connector user, and
// prints the copy's name last.
const fetchScript = `set -e
s=$(dirname -- "$0")
src=$(cat -- "$s/src"; echo x); src=${src%x}
o=$(mktemp "$s/out.XXXXXXXX")
trap 'rm -f -- "$o"' EXIT
cat -- "$src" >"$o"
chmod 644 "$o"
trap - EXIT
printf '\n%s\n' "${o##*/}"
`

func checkEscalation(e *Escalation) error {
	if strings.TrimSpace(e.Command) == "" || strings.IndexByte(e.Command, 0) >= 0 {
		return invalidParams("escalation.command", "escalation.command must be a shell command without NUL bytes")
	}
	if !path.IsAbs(e.StageDir) || !stageNamePattern.MatchString(path.Base(e.StageDir)) || path.Clean(e.StageDir) != e.StageDir {
		return invalidParams("escalation.stage_dir",
			"escalation.stage_dir must be an absolute path ending in pyinfra-orbstack-HEX (16 to 64 hex digits), got %q", e.StageDir)
	}
	return nil
}

func (s *Server) putEscalated(ctx context.Context, c *orbctl.Client, p FilePutParams, body io.Reader, size int64) (any, error) {
	nonce := newNonce()
	input := io.MultiReader(strings.NewReader(p.Escalation.Command+"\n"+nonce+"\n"), body)
	var stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{
		Machine: p.Machine, User: p.User,
		Argv: []string{"sh", "-c", stagedPutScript, "pyinfra-orbstack-put-as", nonce, p.Escalation.StageDir,
			p.RemotePath, strconv.FormatInt(size, 10), installScript},
		Stdin: input, Stderr: &stderr,
	})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, escalatedFailure(p.Machine, "writing "+p.RemotePath, code, stderr.String(), nonce)
	}
	return FileResult{Size: size}, nil
}

func (s *Server) getEscalated(ctx context.Context, c *orbctl.Client, p FileGetParams, out io.Writer) error {
	nonce := newNonce()
	var stderr bytes.Buffer
	code, err := c.Run(ctx, orbctl.RunSpec{
		Machine: p.Machine, User: p.User,
		Argv:  []string{"sh", "-c", stagedGetScript, "pyinfra-orbstack-get-as", nonce, p.Escalation.StageDir, p.RemotePath, fetchScript},
		Stdin: strings.NewReader(p.Escalation.Command + "\n" + nonce + "\n"), Stdout: out, Stderr: &stderr,
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return escalatedFailure(p.Machine, "reading "+p.RemotePath, code, stderr.String(), nonce)
	}
	return nil
}

// escalatedFailure explains a failed escalated transfer. When the escalation
// command itself failed ("NONCE escalated STATUS" on stderr), the error
// carries its status and its stderr lines (data.escalation), in which a
// client recognises its escalation's complaints, such as sudo asking for a
// password.
func escalatedFailure(machine, what string, code int, stderr, nonce string) error {
	loc := regexp.MustCompile(`(?m)^` + nonce + ` escalated (\d+)$`).FindStringSubmatchIndex(stderr)
	if loc == nil { // staging failed before the escalation ran
		return remoteFailure(machine, what, code, stderr)
	}
	status, _ := strconv.Atoi(stderr[loc[2]:loc[3]])
	before := strings.TrimRight(stderr[:loc[0]], "\n")
	if status == 0 { // the escalation went through; what failed came after it
		return remoteFailure(machine, what, code, before+stderr[loc[1]:])
	}
	e := ioError(machine, remoteMessage(machine, what, status, before))
	var lines []string
	if before != "" {
		lines = strings.Split(before, "\n")
	}
	e.SetError(ErrorData{Kind: "io_error", Machine: machine, Escalation: &EscalationFailure{ExitCode: status, Stderr: lines}})
	return e
}
