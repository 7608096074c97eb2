package session

import "strings"

// agentScript runs inside the machine as `sh -c agentScript agent NONCE`,
// started by one `orbctl run`, and runs commands sent on its stdin one at a
// time. It is POSIX sh (dash, busybox ash, bash) plus head -c, dd, setsid,
// mktemp and cat, which it checks for first.
//
// Startup: it makes a private directory (mktemp -d: 0700) and prints
// "\nNONCE ready exact|bytewise DIR" on stdout and "\nNONCE ready" on stderr, or
// "\nNONCE unsupported TOOL" on stdout and exits.
//
// Request: a header line "ID SCRIPTLEN STDINLEN" (STDINLEN "-" = no stdin),
// SCRIPTLEN bytes of script, STDINLEN bytes of stdin, then the line "ID". The
// trailing ID proves the request arrived whole: a truncated one (the binary
// died mid-write) ends the agent instead of running half a script.
// Payloads are read with `head -c` where it reads exactly that many bytes
// from a pipe (GNU asks read(2) for no more than is left), so the stream stays
// in step without base64 or byte-at-a-time reads. busybox's head reads ahead
// and would swallow the next request: the agent tests for that at start and
// then falls back to `dd bs=1` (exact, slower; the binary then keeps large
// stdin off the session), reporting which in its ready line.
//
// Stdin reaches the command through a pipe (cat of a private file), as with
// a per-call orbctl run: a command may tell a file from a pipe (wc -c, for
// one, does not read a regular file). Without stdin it gets /dev/null.
//
// Each command runs as `sh -c SCRIPT` in a new session (setsid), so its
// process group id is its pid, which it writes to DIR/pg: a kill of that group
// (as root, by a separate orbctl run) stops it and everything it started,
// sudo included. It runs in the foreground, not with `&`: an asynchronous
// command in a shell without job control would start with SIGINT and SIGQUIT
// ignored, which a command started by orbctl does not. It starts in the
// agent's directory, which orbctl made the user's home (-w ""), and the agent
// never changes directory, so one command's `cd` cannot leak into the next;
// nor can its variables, since each command is a child process.
//
// The agent's own stderr is /dev/null and the session's stderr is its fd 3,
// which each command makes its stderr itself: the shell reports a child killed
// by a signal ("Terminated") on its stderr as redirected for that child (dash
// redirects in the parent), so the redirection must happen in the child.
//
// Before running the command the agent prints "ID start" on stdout: a
// session that ends before that line did not start the command, which may then
// be sent elsewhere without running twice. At the end it prints "ID out
// STATUS" on stdout and "ID err" on stderr, right after the command's output
// (not on a line of their own, so a last line without a newline is left as
// it was). ID is a fresh random nonce per command: output cannot forge it.
const agentScript = `n=$1
unsupported() { printf '\n%s unsupported %s\n' "$n" "$1"; exit 0; }
for t in head dd setsid mktemp cat; do command -v "$t" >/dev/null 2>&1 || unsupported "$t"; done
if [ "$(printf abc | { head -c 1 >/dev/null; cat; })" = bc ]; then
  take() { head -c "$1"; }; reads=exact
else
  take() { dd bs=1 count="$1" 2>/dev/null; }; reads=bytewise
fi
d=$(mktemp -d "${TMPDIR:-/tmp}/pyinfra-orbstack.XXXXXXXX") || unsupported mktemp
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
exec 3>&2 2>/dev/null
printf '\n%s ready %s %s\n' "$n" "$reads" "$d"
printf '\n%s ready\n' "$n" >&3
r='exec 2>&3 3>&-; echo $$ >"$0"; exec sh -c "$1"'
while IFS=' ' read -r id ns ni; do
  s=$(take "$ns"; echo x)
  s=${s%x}
  if [ "$ni" != - ]; then take "$ni" >"$d/in" || break; fi
  IFS= read -r t || break
  [ "$t" = "$id" ] || break
  : >"$d/pg"
  printf '%s start\n' "$id"
  if [ "$ni" = - ]; then
    setsid sh -c "$r" "$d/pg" "$s" </dev/null
    st=$?
  else
    cat "$d/in" | setsid sh -c "$r" "$d/pg" "$s"
    st=$?
    : >"$d/in"
  fi
  printf '%s out %s\n' "$id" "$st"
  printf '%s err\n' "$id" >&3
done
`

// killScript signals the process group of the command a session is running,
// as root from a separate orbctl run. It waits briefly for the pg file in case
// the command is only just starting.
func killScript(dir, signal string) string {
	f := quote(dir + "/pg")
	return `f=` + f + `; i=0
while [ ! -s "$f" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
read -r pg <"$f" 2>/dev/null && [ -n "$pg" ] && kill -s ` + signal + ` -- "-$pg" 2>/dev/null
exit 0`
}

// commandScript is what the agent runs as `sh -c SCRIPT` for one command: the
// command itself when it needs neither a working directory nor variables,
// otherwise a cd and/or env(1) in front of `sh -c COMMAND`, as the per-call
// path's `orbctl run -w DIR env K=V… sh -c COMMAND` does. A directory that
// cannot be entered falls back to /, as orbctl's -w does.
func commandScript(command, workdir string, env []string) string {
	if workdir == "" && len(env) == 0 {
		return command
	}
	var b strings.Builder
	if workdir != "" {
		b.WriteString("CDPATH= cd -- " + quote(workdir) + " 2>/dev/null || cd /\n")
	}
	b.WriteString("exec ")
	if len(env) > 0 {
		b.WriteString("env")
		for _, kv := range env {
			b.WriteString(" " + quote(kv))
		}
		b.WriteString(" ")
	}
	b.WriteString("sh -c " + quote(command))
	return b.String()
}

// quote makes s one word for a POSIX shell.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
