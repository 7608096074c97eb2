// Package logs gathers machines' logs: OrbStack's log of each machine (`orbctl
// logs`) and the system log inside it (syslog.sh: the journal where systemd
// runs, else /var/log/syslog or /var/log/messages), as Lines tagged with their
// machine and source, merged in time order.
//
// Rules it keeps, and why:
//   - The system log is read only from running machines: `orbctl run` starts a
//     stopped machine, and reading logs must not.
//   - Following resumes exactly where it was after a machine restarts: by the
//     journal's cursor, or by the byte offset in the log file.
//   - A line without a time of its own (OrbStack's console log) takes the time of
//     the line before it in the same source, so merging keeps each source's order.
package logs

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

//go:embed syslog.sh
var syslogScript string

// SourceOrbStack is the source of lines from `orbctl logs`.
const SourceOrbStack = "orbstack"

// Line is one log line.
type Line struct {
	Time    time.Time // zero when neither it nor a line before it in its source had one
	Machine string
	Source  string // "orbstack", "journal", or the log file's path
	Message string
}

// MarshalJSON writes {"time": RFC 3339 or null, "machine", "source", "message"}.
func (l Line) MarshalJSON() ([]byte, error) {
	var t any
	if !l.Time.IsZero() {
		t = l.Time.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(struct {
		Time    any    `json:"time"`
		Machine string `json:"machine"`
		Source  string `json:"source"`
		Message string `json:"message"`
	}{t, l.Machine, l.Source, l.Message})
}

// Reader reads machines' logs through one orbctl.
type Reader struct {
	Client *orbctl.Client
	Since  time.Time     // zero: everything
	Poll   time.Duration // how often following re-reads `orbctl logs` and checks machine states
	Notef  func(format string, a ...any)
	Now    func() time.Time
}

func (r *Reader) note(format string, a ...any) {
	if r.Notef != nil {
		r.Notef(format, a...)
	}
}

func (r *Reader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Machines resolves names to machines (every machine when names is empty); an
// unknown name is ErrMachineNotFound.
func (r *Reader) Machines(ctx context.Context, names []string) ([]orbctl.Machine, error) {
	all, err := r.Client.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
		return all, nil
	}
	byName := map[string]orbctl.Machine{}
	for _, m := range all {
		byName[m.Name] = m
	}
	var out []orbctl.Machine
	for _, n := range names {
		m, ok := byName[n]
		if !ok {
			return nil, &orbctl.Error{Kind: orbctl.ErrMachineNotFound, Machine: n, Args: []string{"list"},
				Message: "no machine named " + n}
		}
		out = append(out, m)
	}
	return out, nil
}

// Dump reads every machine's logs once and returns them merged in time order.
func (r *Reader) Dump(ctx context.Context, machines []orbctl.Machine) ([]Line, error) {
	var mu sync.Mutex
	var lines []Line
	var firstErr error
	var wg sync.WaitGroup
	add := func(ls []Line, err error) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, ls...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, m := range machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := r.Client.Logs(ctx, m.Name, false)
			add(r.keep(consoleLines(m.Name, out, time.Time{})), err)
		}()
		if m.State == "running" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var got []Line
				_, err := r.system(ctx, m.Name, cursorState{}, false, r.Since, func(l Line) { got = append(got, l) })
				add(r.keep(got), err)
			}()
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
	return lines, firstErr
}

// keep drops lines before Since (untimed lines count as older than any Since).
func (r *Reader) keep(lines []Line) []Line {
	if r.Since.IsZero() {
		return lines
	}
	out := lines[:0]
	for _, l := range lines {
		if !l.Time.Before(r.Since) {
			out = append(out, l)
		}
	}
	return out
}

func consoleLines(machine, out string, prev time.Time) []Line {
	var lines []Line
	for _, text := range splitLines(out) {
		t, msg := parseTime(text, prev)
		if !t.IsZero() {
			prev = t
		}
		lines = append(lines, Line{Time: prev, Machine: machine, Source: SourceOrbStack, Message: msg})
	}
	return lines
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// cursorState is where a system log was left: a journal cursor or a file offset.
type cursorState struct {
	file   string // the source it was read from
	Cursor string
	Offset int64
	Last   time.Time
}

// system streams a running machine's system log to emit and returns where it
// stopped (for resuming). It ends when the log ends (follow: when the machine
// stops, or ctx ends).
//
// from.Offset -1 starts a log file at its end; since (zero: none) starts the
// journal there, and drops older lines of a file.
func (r *Reader) system(ctx context.Context, machine string, from cursorState, follow bool, sinceTime time.Time, emit func(Line)) (cursorState, error) {
	pr, pw := io.Pipe()
	since := "-"
	if !sinceTime.IsZero() {
		since = strconv.FormatInt(sinceTime.Unix(), 10)
	}
	cursor := "-"
	if from.Cursor != "" {
		cursor = from.Cursor
	}
	fl := "0"
	if follow {
		fl = "1"
	}
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		code, err := r.Client.Run(ctx, orbctl.RunSpec{Machine: machine, User: "root",
			Argv:   []string{"sh", "-c", syslogScript, "pyinfra-orbstack-logs", since, cursor, strconv.FormatInt(from.Offset, 10), fl},
			Stdout: pw, Stderr: &stderr})
		if err == nil && code != 0 && !follow {
			err = fmt.Errorf("reading the system log of %s failed (exit %d): %s", machine, code, strings.TrimSpace(stderr.String()))
		}
		pw.Close()
		done <- err
	}()
	state := from
	source, wantOffset := "", false
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		text := sc.Text()
		if source == "" {
			source = strings.TrimPrefix(text, "source=")
			state.file = source
			wantOffset = source != "journal" && source != "none"
			continue
		}
		if wantOffset {
			wantOffset = false
			if o, ok := strings.CutPrefix(text, "offset="); ok {
				state.Offset, _ = strconv.ParseInt(o, 10, 64) // where the file is read from
				continue
			}
		}
		if source == "journal" {
			l, cur, ok := journalLine(machine, text)
			if ok {
				state.Cursor, state.Last = cur, l.Time
				emit(l)
			}
			continue
		}
		if source == "none" {
			continue
		}
		state.Offset += int64(len(text)) + 1
		t, msg := parseTime(text, state.Last)
		if !t.IsZero() {
			state.Last = t
		} else if follow {
			state.Last = r.now()
		}
		if !sinceTime.IsZero() && state.Last.Before(sinceTime) {
			continue
		}
		emit(Line{Time: state.Last, Machine: machine, Source: source, Message: msg})
	}
	io.Copy(io.Discard, pr)
	err := <-done
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	return state, err
}

// journalLine reads one `journalctl -o json` entry.
func journalLine(machine, text string) (Line, string, bool) {
	var e map[string]any
	if json.Unmarshal([]byte(text), &e) != nil {
		return Line{}, "", false
	}
	cursor, _ := e["__CURSOR"].(string)
	l := Line{Machine: machine, Source: "journal"}
	if us, ok := e["__REALTIME_TIMESTAMP"].(string); ok {
		if n, err := strconv.ParseInt(us, 10, 64); err == nil {
			l.Time = time.UnixMicro(n).UTC()
		}
	}
	msg := fieldText(e["MESSAGE"])
	if id := fieldText(e["SYSLOG_IDENTIFIER"]); id != "" {
		if pid := fieldText(e["_PID"]); pid != "" {
			id += "[" + pid + "]"
		}
		msg = id + ": " + msg
	}
	l.Message = msg
	return l, cursor, true
}

// fieldText is a journal field: a string, or an array of bytes for binary data.
func fieldText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		b := make([]byte, 0, len(x))
		for _, n := range x {
			if f, ok := n.(float64); ok {
				b = append(b, byte(f))
			}
		}
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return ""
}

// parseTime reads a leading RFC 3339 time (journal short-iso, rsyslog's
// default since Debian 12) or a classic syslog "Jan _2 15:04:05" (this year,
// UTC), and returns it with the rest of the line; else the zero time and the
// whole line.
func parseTime(line string, prev time.Time) (time.Time, string) {
	if first, rest, ok := strings.Cut(line, " "); ok && len(first) >= 20 && first[4] == '-' && first[10] == 'T' {
		if t, err := time.Parse(time.RFC3339Nano, first); err == nil {
			return t.UTC(), rest
		}
	}
	if len(line) > 16 && line[3] == ' ' && line[6] == ' ' && line[15] == ' ' {
		if t, err := time.Parse(time.Stamp, line[:15]); err == nil {
			year := time.Now().UTC().Year()
			if !prev.IsZero() {
				year = prev.Year()
			}
			return t.AddDate(year, 0, 0).UTC(), line[16:]
		}
	}
	return time.Time{}, line
}

// Follow emits every machine's new lines as they come, until ctx ends; lines
// since Since first (none when Since is zero). A machine that stops is waited
// for, and its system log resumes where it left off when it runs again. emit
// is never called concurrently.
func (r *Reader) Follow(ctx context.Context, machines []orbctl.Machine, emit func(Line)) {
	poll := r.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	var mu sync.Mutex
	send := func(l Line) {
		mu.Lock()
		defer mu.Unlock()
		emit(l)
	}
	var wg sync.WaitGroup
	for _, m := range machines {
		wg.Add(2)
		go func() { defer wg.Done(); r.followConsole(ctx, m.Name, poll, send) }()
		go func() { defer wg.Done(); r.followSystem(ctx, m.Name, poll, send) }()
	}
	wg.Wait()
}

// followConsole re-reads `orbctl logs` every poll and emits the lines added; a
// log that no longer starts with what was read (OrbStack began a new one) is
// emitted whole. New lines without a time of their own get the time they were read.
func (r *Reader) followConsole(ctx context.Context, machine string, poll time.Duration, emit func(Line)) {
	var seen string
	var last time.Time
	for first := true; ; first = false {
		out, err := r.Client.Logs(ctx, machine, false)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, orbctl.ErrMachineNotFound) {
			return // followSystem says so
		}
		if err == nil {
			complete := out[:strings.LastIndexByte(out, '\n')+1] // a line being written is taken next time
			added := complete
			if strings.HasPrefix(complete, seen) {
				added = complete[len(seen):]
			}
			seen = complete
			for _, text := range splitLines(added) {
				t, msg := parseTime(text, last)
				switch {
				case !t.IsZero():
					last = t
				case !first:
					last = r.now()
				}
				if first && (r.Since.IsZero() || last.Before(r.Since)) {
					continue // the backlog: only what is newer than Since
				}
				emit(Line{Time: last, Machine: machine, Source: SourceOrbStack, Message: msg})
			}
		}
		if !sleep(ctx, poll) {
			return
		}
	}
}

// followSystem follows the system log while the machine runs, waits while it
// does not, and resumes where it was.
func (r *Reader) followSystem(ctx context.Context, machine string, poll time.Duration, emit func(Line)) {
	state := cursorState{Offset: -1} // a file from its end,
	since := r.Since
	if since.IsZero() {
		since = r.now() // and the journal from now, unless asked for more
	}
	for {
		m, err := r.Client.Info(ctx, machine)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, orbctl.ErrMachineNotFound) {
			r.note("machine %s was deleted: no more of its logs", machine)
			return
		}
		if err == nil && m.State == "running" && r.Client.WaitReady(ctx, machine, poll*5) == nil {
			if !r.Since.IsZero() && state.Offset == -1 {
				state.Offset = 0 // a file from its start, filtered by time
			}
			state, err = r.system(ctx, machine, state, true, since, emit)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.note("the system log of %s: %v", machine, err)
			} else {
				r.note("the system log of %s ended (the machine stopped?): following it again when it runs", machine)
			}
			since = state.Last // journal: the cursor wins; files: the offset
		}
		if !sleep(ctx, poll) {
			return
		}
	}
}

// sleep waits d, or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
