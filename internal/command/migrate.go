package command

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/remote"
)

func newCmdMachineMigrate(f *Factory) *cobra.Command {
	var from, to string
	var checks []string
	var deleteSource bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "migrate NAME --from MAC --to MAC",
		Short: "Move a machine from one Mac to another, streamed through this one",
		Long: `Move a machine between Macs: "orbctl export" on the source Mac (--from), the
archive streamed through this Mac (never stored here) into "orbctl import" on the
destination (--to). A Mac is an ssh destination (an alias of your ssh config,
[user@]host or ssh://[user@]host[:port]) where pyinfra-orbstack is on the PATH
of non-interactive shells, or "local" for this Mac (docs/remote.md).

The destination checks the archive's size and sha256, imports it under a
temporary name, starts it, compares the sha256 of /etc/os-release, /etc/passwd,
/etc/group and every --check PATH with the source's, renames it to NAME and
leaves it running or stopped as the source was. Any failure or interruption
(including this command being killed) deletes the temporary machine and both
temp archives: the destination never keeps a half-imported machine.

The source machine is never changed (a stopped one is started to read the
checked files and stopped again), except that --delete-source deletes it, by
name, once the destination has reported success.

Refused before anything runs: NAME missing on the source (exit status 3), NAME
present on the destination (exit status 4), --from equal to --to (2). Errors
name the stage that failed (export on the source, transfer, import on the
destination, verification on the destination) and the Mac. Exit statuses as for
every machine command; a failure reaching a Mac over ssh is 1.`,
		Example: `  pyinfra-orbstack machine migrate web --from mac-a --to mac-b
  pyinfra-orbstack machine migrate web --from local --to build@mac-mini.lan --delete-source
  pyinfra-orbstack machine migrate db --from mac-a --to mac-b --check /etc/postgresql/16/main/postgresql.conf`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := a[0]
			if !orbctl.ValidName(name) {
				return &usageError{cmd: cmd, err: fmt.Errorf("invalid machine name %q: %s", name, orbctl.NameRule)}
			}
			if from == "" || to == "" {
				return &usageError{cmd: cmd, err: errors.New("--from and --to are required (an ssh destination, or local for this Mac)")}
			}
			src, dst := remote.Mac{Host: from}, remote.Mac{Host: to}
			if src.IsLocal() == dst.IsLocal() && (src.IsLocal() || from == to) {
				return &usageError{cmd: cmd, err: fmt.Errorf("--from and --to are the same Mac (%s): a machine moves between two Macs", src.Name())}
			}
			for _, m := range []remote.Mac{src, dst} {
				if err := m.Check(); err != nil {
					return &usageError{cmd: cmd, err: err}
				}
			}
			if err := checkPaths(checks); err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			if timeout <= 0 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--timeout must be positive, got %s", timeout)}
			}
			all := append(append([]string(nil), DefaultMigrateChecks...), checks...)
			m := &migration{f: f, name: name, src: src, dst: dst, checks: dedupe(all), timeout: timeout}
			return reported(f, m.run(cmd.Context(), deleteSource))
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the Mac the machine is on: an ssh destination, or local")
	cmd.Flags().StringVar(&to, "to", "", "the Mac to move it to: an ssh destination, or local")
	cmd.Flags().BoolVar(&deleteSource, "delete-source", false, "delete the machine on --from once --to has it")
	cmd.Flags().StringArrayVar(&checks, "check", nil, "one more file (absolute path in the machine) whose sha256 must match on both Macs; repeatable")
	cmd.Flags().DurationVar(&timeout, "timeout", orbctl.DefaultReadyTimeout, "how long starting the machine on either Mac may take")
	return cmd
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// migrateError is a failed or refused migration, said in one line.
type migrateError struct {
	msg  string
	code int
}

func (e *migrateError) Error() string { return e.msg }

// reported prints a migrateError and ends with its status; other errors go
// to Main as they are.
func reported(f *Factory, err error) error {
	var me *migrateError
	if errors.As(err, &me) {
		fmt.Fprintln(f.Err, "Error:", me.msg)
		return &exitError{code: me.code}
	}
	return err
}

func macLabel(m remote.Mac) string {
	if m.IsLocal() {
		return "this Mac"
	}
	return "Mac " + m.Host
}

type migration struct {
	f        *Factory
	name     string
	src, dst remote.Mac
	checks   []string
	timeout  time.Duration
	self     string
}

// stageError is a failure at one stage, with what it leaves behind.
func (m *migration) stageError(stage string, code int, msg string) error {
	where := map[string]string{
		stageExport:   "export on " + macLabel(m.src),
		stageTransfer: "transfer from " + macLabel(m.src) + " to " + macLabel(m.dst),
		stageImport:   "import on " + macLabel(m.dst),
		stageVerify:   "verification on " + macLabel(m.dst),
	}[stage]
	if code == 0 {
		code = ExitFailure
	}
	return &migrateError{code: code, msg: fmt.Sprintf("migrating %s: %s failed: %s (%s is unchanged on %s; nothing was kept on %s)",
		m.name, where, strings.TrimSuffix(oneLine(msg), "."), m.name, macLabel(m.src), macLabel(m.dst))}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// sideFailure words how a Mac's end ended: ssh's own failures as remote
// words them, otherwise the binary's last error line.
func sideFailure(mac remote.Mac, err error, stderr string) (int, string) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return ExitFailure, fmt.Sprintf("cannot run it: %v", err)
	}
	code := ee.ExitCode()
	if code == -1 {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ExitFailure, fmt.Sprintf("it was killed (%s)", ws.Signal())
		}
	}
	if !mac.IsLocal() && mac.Unreached(code, stderr) {
		return ExitMacUnreachable, remote.Classify(mac, code, stderr).Message
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	msg := strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "Error: ")
	// Main's hint lines follow the error line: the error is the one to show.
	if len(lines) > 1 && (strings.HasPrefix(msg, "List the machines") || strings.HasPrefix(msg, "Start OrbStack") || strings.HasPrefix(msg, "Run '")) {
		msg = strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-2]), "Error: ")
	}
	if msg == "" {
		msg = fmt.Sprintf("exit status %d and no message", code)
	}
	if code < 1 || code > ExitOrbStackNotRunning {
		code = ExitFailure
	}
	return code, msg
}

// tailBuffer keeps the last 8 KiB written to it (a side's stderr).
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 8192 {
		t.b = t.b[len(t.b)-8192:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { t.mu.Lock(); defer t.mu.Unlock(); return string(t.b) }

// countingReader remembers how much it read and its read error (the
// source's side of the transfer).
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

// terminate asks a side to stop: SIGTERM makes the local binary clean up,
// and ssh close the session (the remote end sees its pipes close and cleans
// up). Waiting for it is the caller's.
func terminate(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
}

func (m *migration) run(ctx context.Context, deleteSource bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	m.self = self
	f := m.f

	// Refusals, before anything is changed.
	found, err := whereMachine(ctx, f, self, m.name, []remote.Mac{m.src, m.dst})
	if err != nil {
		return err
	}
	onSrc, onDst := found[0], found[1]
	if onSrc == nil {
		return &migrateError{code: ExitMachineNotFound, msg: fmt.Sprintf("%s is not on %s (pyinfra-orbstack list there shows its machines)", m.name, macLabel(m.src))}
	}
	if onDst != nil {
		if onDst.ID == onSrc.ID {
			return &migrateError{code: ExitUsage, msg: fmt.Sprintf("--from %s and --to %s reach the same Mac (%s has the same ID on both)", m.src.Host, m.dst.Host, m.name)}
		}
		return &migrateError{code: ExitMachineExists, msg: fmt.Sprintf("%s already exists on %s: delete or rename it there first", m.name, macLabel(m.dst))}
	}

	start := time.Now()
	exportArgs := []string{"machine", "export-stream", m.name, "--timeout", m.timeout.String()}
	for _, c := range m.checks {
		exportArgs = append(exportArgs, "--check", c)
	}
	exp := m.src.Command(f.Getenv, self, exportArgs...)
	var expErr tailBuffer
	exp.Stderr = &expErr
	expOut, err := exp.StdoutPipe()
	if err != nil {
		return err
	}
	// A side that outlives its process (a child still holding its stderr)
	// must not hold this command forever.
	exp.WaitDelay = 30 * time.Second
	if err := exp.Start(); err != nil {
		return m.stageError(stageExport, 0, err.Error())
	}
	// Closing our end makes the source's next write fail, whatever it is
	// (ssh, or a process between it and the binary): it cleans up.
	stopWatch := context.AfterFunc(ctx, func() { terminate(exp); _ = expOut.Close() })
	defer stopWatch()
	src := bufio.NewReaderSize(expOut, 1<<20)
	line, err := src.ReadBytes('\n')
	var header streamHeader
	if err == nil {
		err = json.Unmarshal(line, &header)
	}
	if err != nil || header.Size <= 0 {
		_ = expOut.Close()
		werr := exp.Wait()
		if werr == nil {
			return m.stageError(stageExport, 0, fmt.Sprintf("the source sent no archive (%.200q)", line))
		}
		code, msg := sideFailure(m.src, werr, expErr.String())
		return m.stageError(stageExport, code, msg)
	}
	exported := time.Now()

	req, _ := json.Marshal(importRequest{streamHeader: header, Timeout: m.timeout.String()})
	imp := m.dst.Command(f.Getenv, self, "machine", "import-stream")
	var impOut bytes.Buffer
	var impErr tailBuffer
	imp.Stdout, imp.Stderr = &impOut, &impErr
	impIn, err := imp.StdinPipe()
	if err != nil {
		return err
	}
	imp.WaitDelay = 30 * time.Second
	if err := imp.Start(); err != nil {
		terminate(exp)
		_ = expOut.Close()
		_ = exp.Wait()
		return m.stageError(stageImport, 0, err.Error())
	}
	stopWatchImp := context.AfterFunc(ctx, func() { _ = impIn.Close() })
	defer stopWatchImp()
	counted := &countingReader{r: src}
	_, werr := impIn.Write(append(req, '\n'))
	var sent int64
	if werr == nil {
		sent, werr = io.CopyN(impIn, counted, header.Size)
	}
	_ = impIn.Close() // the whole archive, or an early end that makes the destination clean up
	sourceCut := counted.err != nil && sent < header.Size
	if sourceCut || ctx.Err() != nil {
		terminate(exp)
	}
	impWait := imp.Wait()
	_ = expOut.Close() // all read, or a failure: the source's writes end here
	expWait := exp.Wait()
	transferred := time.Now()

	var res importResult
	if lines := bytes.Split(bytes.TrimSpace(impOut.Bytes()), []byte("\n")); len(lines) > 0 {
		_ = json.Unmarshal(lines[len(lines)-1], &res)
	}
	switch {
	case res.OK:
	case ctx.Err() != nil:
		return m.stageError(stageTransfer, 0, fmt.Sprintf("interrupted after %d of %d bytes", sent, header.Size))
	case sourceCut:
		msg := fmt.Sprintf("the stream from %s stopped after %d of %d bytes", macLabel(m.src), sent, header.Size)
		code := 0
		if expWait != nil {
			var why string
			code, why = sideFailure(m.src, expWait, expErr.String())
			msg += ": " + why
		}
		return m.stageError(stageTransfer, code, msg)
	case res.Stage != "":
		return m.stageError(res.Stage, res.Exit, res.Error)
	default:
		stage := stageImport
		if sent < header.Size {
			stage = stageTransfer
		}
		code, msg := sideFailure(m.dst, impWait, impErr.String())
		if impWait == nil {
			msg = fmt.Sprintf("no result from %s", macLabel(m.dst))
		}
		return m.stageError(stage, code, msg)
	}
	if expWait != nil {
		_, why := sideFailure(m.src, expWait, expErr.String())
		fmt.Fprintf(f.Err, "warning: %s has %s; the source's end then failed: %s\n", macLabel(m.dst), m.name, why)
	}
	fmt.Fprintf(f.Out, "migrated %s from %s to %s (%s, %s; export %.1fs, transfer and import %.1fs)\n",
		m.name, m.src.Name(), m.dst.Name(), humanBytes(header.Size), res.State,
		exported.Sub(start).Seconds(), transferred.Sub(exported).Seconds())

	if deleteSource {
		del := m.src.Command(f.Getenv, self, "machine", "delete", m.name)
		var delErr tailBuffer
		del.Stderr = &delErr
		if err := del.Run(); err != nil {
			code, msg := sideFailure(m.src, err, delErr.String())
			return &migrateError{code: code, msg: fmt.Sprintf("%s is on %s now, but deleting it on %s failed: %s",
				m.name, macLabel(m.dst), macLabel(m.src), oneLine(msg))}
		}
		fmt.Fprintf(f.Out, "deleted %s on %s\n", m.name, m.src.Name())
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// whereMachine looks NAME up on each Mac at once: this Mac through orbctl,
// another through `machine info --json --missing-ok` over ssh. A nil entry is
// a Mac without it; a Mac that cannot answer is an error naming it.
func whereMachine(ctx context.Context, f *Factory, self, name string, macs []remote.Mac) ([]*orbctl.Machine, error) {
	found := make([]*orbctl.Machine, len(macs))
	errs := make([]error, len(macs))
	var wg sync.WaitGroup
	for i, mac := range macs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			found[i], errs[i] = lookUp(ctx, f, self, name, mac)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return found, nil
}

func lookUp(ctx context.Context, f *Factory, self, name string, mac remote.Mac) (*orbctl.Machine, error) {
	if mac.IsLocal() {
		c, err := f.Orbctl()
		if err != nil {
			return nil, err
		}
		m, err := c.Info(ctx, name)
		if errors.Is(err, orbctl.ErrMachineNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &m, nil
	}
	cmd := mac.Command(f.Getenv, self, "machine", "info", "--json", "--missing-ok", name)
	var stdout bytes.Buffer
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		code, msg := sideFailure(mac, err, stderr.String())
		if code == ExitMacUnreachable {
			return nil, &migrateError{code: code, msg: msg}
		}
		return nil, &migrateError{code: code, msg: fmt.Sprintf("looking for %s on %s: %s", name, macLabel(mac), oneLine(msg))}
	}
	var m *orbctl.Machine
	var extra struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		return nil, fmt.Errorf("looking for %s on %s: unreadable answer %.200q", name, macLabel(mac), stdout.String())
	}
	if m != nil && json.Unmarshal(stdout.Bytes(), &extra) == nil {
		m.Config = extra.Config // not in Machine's own JSON
	}
	return m, nil
}

func newCmdMachineWhere(f *Factory) *cobra.Command {
	var macs []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "where NAME --mac MAC...",
		Short: "Show which Macs have a machine",
		Long: `Look NAME up on each --mac at once: "local" for this Mac, otherwise an ssh
destination where pyinfra-orbstack is on the PATH (docs/remote.md). With --json
the output is an object keyed by Mac, in the order given, with the machine as
"machine info --json" prints it, or null where it is absent. A Mac that cannot
answer is an error (exit status 1) naming it.`,
		Example: `  pyinfra-orbstack machine where web --mac mac-a --mac mac-b --json`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if len(macs) == 0 {
				return &usageError{cmd: cmd, err: errors.New("give at least one --mac (an ssh destination, or local)")}
			}
			list := make([]remote.Mac, len(macs))
			for i, h := range macs {
				list[i] = remote.Mac{Host: h}
				if err := list[i].Check(); err != nil {
					return &usageError{cmd: cmd, err: err}
				}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			found, err := whereMachine(cmd.Context(), f, self, a[0], list)
			if err != nil {
				return reported(f, err)
			}
			if asJSON {
				// An object in the order given (encoding/json sorts map keys).
				var b bytes.Buffer
				b.WriteString("{")
				for i, h := range macs {
					if i > 0 {
						b.WriteString(",")
					}
					k, _ := json.Marshal(h)
					var v []byte
					if found[i] == nil {
						v = []byte("null")
					} else {
						v, _ = json.Marshal(toJSON(*found[i]))
					}
					fmt.Fprintf(&b, "\n  %s: %s", k, v)
				}
				b.WriteString("\n}\n")
				_, err := f.Out.Write(b.Bytes())
				return err
			}
			for i, h := range macs {
				state := "absent"
				if found[i] != nil {
					state = found[i].State
				}
				fmt.Fprintf(f.Out, "%s\t%s\n", h, state)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&macs, "mac", nil, "a Mac to look on: an ssh destination, or local; repeatable")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
