package command

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/monitor"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// DefaultMonitorPort is where `monitor` serves unless --port says otherwise.
const DefaultMonitorPort = 9787

// MonitorOptions are monitor's flags.
type MonitorOptions struct {
	Address      string
	Port         int
	Interval     time.Duration
	ProbeTimeout time.Duration
	Once         bool
	JSON         bool
}

// NewCmdMonitor builds `monitor`.
func NewCmdMonitor(f *Factory) *cobra.Command {
	opts := &MonitorOptions{}
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Watch OrbStack and its machines; serve Prometheus metrics",
		Long: `Poll OrbStack and every machine at --interval: OrbStack's state and limits, each
machine's state and disk size, and for each running machine a readiness probe
("orbctl run -m NAME true", timed) and its resource figures read inside it (load,
memory, disk of /, processes, uptime). Serve the latest poll as Prometheus
metrics on http://ADDRESS:PORT/metrics, and the exporter's own health on /healthz.

It listens on 127.0.0.1 unless --address says otherwise. Every orbctl call has
its own --probe-timeout, and machines are probed in parallel: a machine that
hangs never delays the others. A stopped OrbStack is orbstack_up 0, not an error,
and is never started by the monitor (only "orbctl status" is asked then).

--once polls once and prints the result (a table, or JSON with --json) and
exits 0 when OrbStack runs and every running machine answered, else 1.
Metrics and alerts: docs/monitoring.md.`,
		Example: `  pyinfra-orbstack monitor                       # http://127.0.0.1:9787/metrics
  pyinfra-orbstack monitor --port 9100 --interval 30s
  pyinfra-orbstack monitor --once --json | jq '.machines[] | {name, probe}'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Interval < time.Second {
				return &usageError{cmd: cmd, err: fmt.Errorf("--interval must be at least 1s, got %s", opts.Interval)}
			}
			if opts.ProbeTimeout <= 0 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--probe-timeout must be positive, got %s", opts.ProbeTimeout)}
			}
			if opts.Port < 0 || opts.Port > 65535 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--port must be 0-65535, got %d", opts.Port)}
			}
			if opts.JSON && !opts.Once {
				return &usageError{cmd: cmd, err: errors.New("--json goes with --once (the server's output is /metrics)")}
			}
			return monitorRun(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().StringVar(&opts.Address, "address", "127.0.0.1", "address to listen on (0.0.0.0 exposes the metrics to your network)")
	cmd.Flags().IntVar(&opts.Port, "port", DefaultMonitorPort, "port to listen on (0: any free port, printed on stderr)")
	cmd.Flags().DurationVar(&opts.Interval, "interval", 15*time.Second, "time between polls")
	cmd.Flags().DurationVar(&opts.ProbeTimeout, "probe-timeout", monitor.DefaultProbeTimeout, "how long each orbctl call of a poll may take")
	cmd.Flags().BoolVar(&opts.Once, "once", false, "poll once, print the result and exit")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "with --once: print JSON")
	return cmd
}

func monitorRun(ctx context.Context, f *Factory, opts *MonitorOptions) error {
	var c *orbctl.Client
	path, err := orbctl.Locate(f.Getenv)
	if err != nil && opts.Once {
		return err
	}
	if err == nil {
		c = orbctl.New(path)
	} else {
		// Served anyway: orbstack_up is 0 until OrbStack is installed.
		fmt.Fprintln(f.Err, "Warning:", describe(err))
		c = orbctl.New("orbctl")
	}
	poller := &monitor.Poller{Client: c, ProbeTimeout: opts.ProbeTimeout}
	if opts.Once {
		s, err := poller.Poll(ctx)
		if err != nil {
			return err
		}
		if opts.JSON {
			err = printJSON(f, s)
		} else {
			err = printSnapshot(f, s)
		}
		if err != nil {
			return err
		}
		if !healthy(s) {
			return &exitError{code: ExitFailure}
		}
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.Address, strconv.Itoa(opts.Port)))
	if err != nil {
		return fmt.Errorf("cannot listen on %s:%d: %w (choose another with --port)", opts.Address, opts.Port, err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := log.New(f.Err, "pyinfra-orbstack monitor: ", log.LstdFlags)
	logger.Printf("serving http://%s/metrics every %s (orbctl %s)", ln.Addr(), opts.Interval, c.Path)
	e := &monitor.Exporter{Poller: poller, Interval: opts.Interval, Logger: logger}
	if err := e.Serve(ctx, ln); err != nil {
		return err
	}
	logger.Printf("stopped")
	return nil
}

func healthy(s *monitor.Snapshot) bool {
	if !s.OrbStack.Running {
		return false
	}
	for _, m := range s.Machines {
		if m.Probe != nil && !m.Probe.OK {
			return false
		}
	}
	return true
}

func printSnapshot(f *Factory, s *monitor.Snapshot) error {
	if !s.OrbStack.Running {
		fmt.Fprintf(f.Out, "OrbStack: not running (%s)\n", firstOf(s.OrbStack.Error, s.OrbStack.Status))
		return nil
	}
	fmt.Fprintf(f.Out, "OrbStack %s: running, %d machines\n", s.OrbStack.Version, len(s.Machines))
	tw := tabwriter.NewWriter(f.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tSTATE\tPROBE\tLOAD\tMEMORY\tDISK /\tPROCS\tUPTIME")
	for _, m := range s.Machines {
		probe, load, mem, disk, procs, up := "-", "-", "-", "-", "-", "-"
		if m.Probe != nil {
			probe = fmt.Sprintf("%.0f ms", m.Probe.Seconds*1000)
			if !m.Probe.OK {
				probe = "FAILED: " + m.Probe.Error
			}
		}
		if r := m.Resources; r != nil {
			if r.Load != nil {
				load = fmt.Sprintf("%.2f", r.Load[0])
			}
			mem = bytesOrNone(&r.Memory.Used) + " / " + bytesOrNone(&r.Memory.Total)
			if r.Disk.Total != nil {
				disk = bytesOrNone(r.Disk.Used) + " / " + bytesOrNone(r.Disk.Total)
			}
			procs = strconv.Itoa(r.Processes)
			up = (time.Duration(r.Uptime) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, probe, load, mem, disk, procs, up)
	}
	return tw.Flush()
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return "unknown"
}
