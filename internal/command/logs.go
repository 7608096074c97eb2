package command

import (
	"encoding/json"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/logs"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// LogsOptions are logs' flags.
type LogsOptions struct {
	Follow bool
	Since  string
	JSON   bool
	Poll   time.Duration
}

// NewCmdLogs builds `logs`.
func NewCmdLogs(f *Factory) *cobra.Command {
	opts := &LogsOptions{}
	cmd := &cobra.Command{
		Use:   "logs [MACHINE...]",
		Short: "Print machines' logs, merged in time order",
		Long: `Print the logs of the given machines (default: every machine), each line tagged
with its machine and source, merged in time order: OrbStack's log of the machine
("orbctl logs", source "orbstack") and, for running machines, the system log from
inside it: the journal where systemd runs (source "journal"), else
/var/log/syslog or /var/log/messages (the file's path). A stopped machine is never
started to read its logs.

A line without a time of its own (OrbStack's log) takes the time of the line
before it in the same source; --since drops the lines older than it, counting
lines without any time as older.

--follow prints new lines as they come until Ctrl-C (with --since, the lines since
then first). A machine that stops is waited for; when it runs again its system log
resumes where it left off (by the journal's cursor, or the file's byte offset).

--json prints one JSON object a line, for log shippers (Vector, Loki's promtail,
Fluent Bit): {"time": RFC 3339 or null, "machine", "source", "message"}.`,
		Example: `  pyinfra-orbstack logs web
  pyinfra-orbstack logs --since 10m web db
  pyinfra-orbstack logs --follow --json >> /var/log/orbstack-machines.jsonl`,
		RunE: func(cmd *cobra.Command, names []string) error {
			since, err := parseSince(opts.Since, time.Now())
			if err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			if opts.Poll < 100*time.Millisecond {
				return &usageError{cmd: cmd, err: fmt.Errorf("--poll must be at least 100ms, got %s", opts.Poll)}
			}
			for _, n := range names {
				if !orbctl.ValidName(n) {
					return &usageError{cmd: cmd, err: fmt.Errorf("invalid machine name %q: %s", n, orbctl.NameRule)}
				}
			}
			return withOrbctl(f, func(c *orbctl.Client) error {
				r := &logs.Reader{Client: c, Since: since, Poll: opts.Poll,
					Notef: func(format string, a ...any) { fmt.Fprintf(f.Err, "note: "+format+"\n", a...) }}
				ctx := cmd.Context()
				machines, err := r.Machines(ctx, names)
				if err != nil {
					return err
				}
				print := func(l logs.Line) { printLine(f, l, opts.JSON) }
				if opts.Follow {
					ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
					defer stop()
					r.Follow(ctx, machines, print)
					return nil
				}
				lines, err := r.Dump(ctx, machines)
				for _, l := range lines {
					print(l)
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "print new lines as they come, until Ctrl-C")
	cmd.Flags().StringVar(&opts.Since, "since", "", "only lines since then: a duration back from now (10m, 2h) or a time (2026-01-02T15:04:05Z, 2026-01-02)")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "one JSON object a line")
	cmd.Flags().DurationVar(&opts.Poll, "poll", 2*time.Second, "with --follow: how often OrbStack's log and stopped machines are checked")
	return cmd
}

// parseSince reads --since: a duration back from now, an RFC 3339 time or a date.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %q: a duration must be positive (how far back from now)", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q is neither a duration (10m, 2h) nor a time (2026-01-02T15:04:05Z, 2026-01-02)", s)
}

func printLine(f *Factory, l logs.Line, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(l)
		fmt.Fprintf(f.Out, "%s\n", b)
		return
	}
	t := "-"
	if !l.Time.IsZero() {
		t = l.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	fmt.Fprintf(f.Out, "%-24s %s %s: %s\n", t, l.Machine, l.Source, strings.TrimRight(l.Message, "\r"))
}
