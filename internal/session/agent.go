package session

import (
	"strconv"
	"strings"
	"time"
)

// agentScript runs inside the machine as `sh -c agentScript agent NONCE`,
// started by one `orbctl run`, and runs commands sent on its stdin one at a
// time. Every command reaches a machine this way, through a pooled session or
// a one-shot agent (RunOnce): a command's text (and so any password pyinfra
// puts in it) travels on orbctl's stdin, never in an argv on the Mac. It is
// POSIX sh (dash, busybox ash, bash) plus head -c, dd, setsid, mktemp,
// mkfifo and cat, which it checks for first.
//
// Startup: it removes what dead agents and cut-short uploads of the same user
// left behind (sweep, below), makes a private directory (mktemp -d: 0700)
// holding "PID NONCE" in DIR/agent, and prints "\nNONCE ready exact|bytewise
// DIR" on stdout and "\nNONCE ready" on stderr, or "\nNONCE unsupported TOOL"
// on stdout and exits.
//
// Request: a header line "ID SCRIPTLEN STDINLEN" (STDINLEN "-" = no stdin),
// SCRIPTLEN bytes of script, STDINLEN bytes of stdin, then the line "ID".
// SCRIPTLEN "l" means the script is one line: the line after the header,
// read with the shell's own `read` (no fork: a short one-line script, which
// most of pyinfra's commands are, costs no head(1) and no subshell, about
// 40% of the agent's work per command). The
// trailing ID proves the request arrived whole: a truncated one (the binary
// died mid-write) ends the agent instead of running half a script.
// Payloads are read with `head -c` where it reads exactly that many bytes
// from a pipe (here the FIFO) (GNU asks read(2) for no more than is left), so the stream stays
// in step without base64 or byte-at-a-time reads. busybox's head reads ahead
// and would swallow the next request: the agent tests for that at start and
// then falls back to `dd bs=1` (exact, slower; the binary then keeps large
// stdin off pooled sessions), reporting which in its ready line.
//
// Stdin reaches the command through a pipe (cat of a private file), as with
// a plain orbctl run: a command may tell a file from a pipe (wc -c, for one,
// does not read a regular file). Without stdin it gets /dev/null.
//
// Each command runs as `sh -c SCRIPT` in a new session (setsid), so its
// process group id is its pid, which is written to DIR/pg: a kill of that group
// (as root, by a separate orbctl run: killScript) stops it and everything it
// started, sudo included. It runs in the foreground, not with `&`: an
// asynchronous command in a shell without job control would start with SIGINT
// and SIGQUIT ignored, which a command started by orbctl does not. It starts
// in the agent's directory, which orbctl made the user's home (-w ""), and the
// agent never changes directory, so one command's `cd` cannot leak into the
// next; nor can its variables, since each command is a child process.
// Where /proc is there (every Linux machine), the child is a subshell of the
// agent that redirects its stderr, reads its own pid from /proc/self/stat and
// execs setsid: one exec fewer than the fallback `setsid sh -c R`, where R is
// a shell that does the same with $$ before it execs the command's shell.
//
// The agent does not read its stdin itself: a watcher (`sh -c …
// pyinfra-orbstack-watch DIR`), started once, cats it into the FIFO DIR/q,
// which the agent reads requests from. When the binary is gone (killed,
// crashed, or its orbctl was) the cat sees end-of-file and exits, and the
// watcher then kills the command running at that moment (DIR/pg is emptied whenever none runs): treeKillScript, TERM and
// KILL after 2 s, through `sudo -n` where that works (OrbStack's default user
// has passwordless sudo, and the agent's user cannot signal what became root
// through sudo) and as the user otherwise; a user without passwordless sudo
// leaves such root processes running until they end. The agent then reads
// end-of-file from the FIFO and exits. A normal close is the same end-of-file
// with no command running: nothing is killed. Costs nothing per command.
//
// The agent traps SIGPIPE (a trap, unlike an ignored signal, is not passed on
// to commands): writing its markers to a binary that is gone must end it
// through its EXIT trap, which removes its directory.
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
var agentScript = `n=$1
unsupported() { printf '\n%s unsupported %s\n' "$n" "$1"; exit 0; }
for t in head dd setsid mktemp mkfifo cat; do command -v "$t" >/dev/null 2>&1 || unsupported "$t"; done
if [ "$(printf abc | { head -c 1 >/dev/null; cat; })" = bc ]; then
  take() { head -c "$1"; }; reads=exact
else
  take() { dd bs=1 count="$1" 2>/dev/null; }; reads=bytewise
fi
` + sweepScript + `
d=$(mktemp -d "${TMPDIR:-/tmp}/pyinfra-orbstack.XXXXXXXX") || unsupported mktemp
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE
printf '%s %s\n' "$$" "$n" >"$d/agent"
mkfifo "$d/q" || unsupported mkfifo
k=` + "'" + strings.ReplaceAll(treeKillScript, "'", `'\''`) + "'" + `
w='cat >"$1/q"; read -r g <"$1/pg" && [ -n "$g" ] || exit 0
{ command -v sudo && sudo -n sh -c "$2" kill "$g" 20; } || sh -c "$2" kill "$g" 20'
exec 4<&0
sh -c "$w" pyinfra-orbstack-watch "$d" "$k" <&4 4<&- >/dev/null 2>&1 &
exec 3>&2 2>/dev/null 4<&- <"$d/q"
printf '\n%s ready %s %s\n' "$n" "$reads" "$d"
printf '\n%s ready\n' "$n" >&3
r='exec 2>&3 3>&-; echo $$ >"$0"; exec sh -c "$1"'
if read -r p _ </proc/self/stat 2>/dev/null && [ "$p" = $$ ]; then
  run() { ( exec 2>&3 3>&-; read -r p _ </proc/self/stat; echo "$p" >"$d/pg"; exec setsid sh -c "$s" ); }
else
  run() { setsid sh -c "$r" "$d/pg" "$s"; }
fi
while IFS=' ' read -r id ns ni; do
  if [ "$ns" = l ]; then
    IFS= read -r s || break
  else
    s=$(take "$ns"; echo x)
    s=${s%x}
  fi
  if [ "$ni" != - ]; then take "$ni" >"$d/in" || break; fi
  IFS= read -r t || break
  [ "$t" = "$id" ] || break
  printf '%s start\n' "$id"
  if [ "$ni" = - ]; then
    run </dev/null
    st=$?
  else
    cat "$d/in" | run
    st=$?
    : >"$d/in"
  fi
  : >"$d/pg"
  printf '%s out %s\n' "$id" "$st"
  printf '%s err\n' "$id" >&3
done
`

// sweepScript is the part of the agent's startup that removes, for the user
// it runs as, what earlier runs could not: private directories of agents that
// are gone (killed with their machine, or by SIGKILL), temporary files of
// uploads that were cut short (the machine stopped mid-transfer; see
// putScript in internal/rpc, which records each one in the journal) and the
// stage directories of escalated transfers (internal/rpc, escalated.go). An entry
// is stale only when the process it names no longer runs with the nonce it
// recorded (so a reused PID does not keep it, and a live transfer or agent of
// another run is never touched), and only files of the shapes we create, owned
// by this user, are removed. Without /proc it does nothing.
const sweepScript = `alive() { [ -r "/proc/$1/cmdline" ] && case "$(tr '\000' ' ' <"/proc/$1/cmdline" 2>/dev/null)" in *" $2 "*|*" $2") true ;; *) false ;; esac; }
if [ -d /proc/self ] && command -v tr >/dev/null 2>&1; then
  for o in "${TMPDIR:-/tmp}"/pyinfra-orbstack.*/agent; do
    [ -f "$o" ] && [ -O "$o" ] || continue
    read -r p m <"$o" 2>/dev/null || continue
    alive "$p" "$m" || rm -rf -- "${o%/agent}"
  done
  j=` + JournalDir + `
  if [ -d "$j" ] && [ ! -L "$j" ] && [ -O "$j" ]; then
    for e in "$j"/*; do
      [ -f "$e" ] || continue
      read -r p m f <"$e" 2>/dev/null || { rm -f -- "$e"; continue; }
      alive "$p" "$m" && continue
      case "${f##*/}" in
        .pyinfra-orbstack.??????) [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && rm -f -- "$f" ;;
        pyinfra-orbstack-[0-9a-f]*) [ -d "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && rm -rf -- "$f" ;;
      esac
      rm -f -- "$e"
    done
  fi
fi 2>/dev/null`

// JournalDir is where uploads note their temporary files until they are
// renamed into place, per user, as shell text: a persistent directory (a
// machine's /tmp is a tmpfs that a stop empties, the temp file beside the
// destination is not), made 0700 by its owner.
const JournalDir = `"/var/tmp/pyinfra-orbstack-$(id -u)"`

// treeKillScript runs as `sh -c treeKillScript kill PGID TENTHS` and stops a
// command: the process group PGID and every group that a descendant of one of
// its processes made (`su -c` and `setsid` move the command into a new
// session, out of the group that a plain group kill reaches). It sends
// SIGTERM to them all, waits up to TENTHS tenths of a second for every one to
// be empty (the groups, not a leader: a leader that dies of the TERM while
// another member ignores it must not end the kill), and if one is not, looks
// for new descendants once more and sends SIGKILL. The groups are collected before
// any signal (a dying parent orphans its children to init) and only grow.
// It reads /proc with awk; without either it kills PGID's group alone.
const treeKillScript = `G=$1 n=$2
grow() {
  [ -d /proc/self ] && command -v awk >/dev/null 2>&1 || return 0
  G=$(for f in /proc/[0-9]*/stat; do
    set -f; read -r l <"$f" 2>/dev/null || continue
    p=${l%% *}; l=${l##*) }; set -- $l; echo "$p $2 $3"
  done | awk -v seeds="$G" 'BEGIN { k = split(seeds, s, " "); for (i = 1; i <= k; i++) G[s[i]] = 1 }
    { par[$1] = $2; grp[$1] = $3 }
    END { do { c = 0; for (p in par) if (!(grp[p] in G) && (par[p] in grp) && (grp[par[p]] in G)) { G[grp[p]] = 1; c = 1 } } while (c)
      for (g in G) if (g + 0 > 1) print g }')
}
sig() { for g in $G; do kill -s "$1" -- "-$g"; done 2>/dev/null; }
live() { for g in $G; do kill -s 0 -- "-$g" 2>/dev/null && return 0; done; return 1; }
grow; sig TERM
i=0; while [ $i -lt "$n" ] && live; do sleep 0.1; i=$((i+1)); done
if live; then grow; sig KILL; fi
exit 0`

// killScript stops the command a session is running, as root from a separate
// orbctl run (the command may have become root through sudo): treeKillScript
// on its process group, with grace before the SIGKILL. It waits briefly for
// the pg file in case the command is only just starting.
func killScript(dir string, grace time.Duration) string {
	f := quote(dir + "/pg")
	tenths := int(grace / (100 * time.Millisecond))
	return `f=` + f + `; i=0
while [ ! -s "$f" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
read -r pg <"$f" 2>/dev/null && [ -n "$pg" ] || exit 0
set -- "$pg" ` + strconv.Itoa(tenths) + `
` + treeKillScript
}

// commandScript is what the agent runs as `sh -c SCRIPT` for one command: the
// command itself when it needs neither a working directory nor variables,
// otherwise a cd and/or env(1) in front of `sh -c COMMAND`. A directory that
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
