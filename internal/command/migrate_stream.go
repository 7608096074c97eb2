package command

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// The two ends of `machine migrate`, run on the Macs by the controller
// (hidden: their stdin and stdout are a protocol, not for people).
//
// export-stream NAME on the source Mac prints one JSON line (streamHeader)
// and then exactly Size bytes of the archive. import-stream on the
// destination reads one JSON line (importRequest) and then Size bytes, and
// prints one JSON line (importResult) whatever happens. Both keep the archive
// in a private temp directory that is removed on every path out, including
// a closed pipe, SIGINT, SIGTERM and SIGHUP.

// DefaultMigrateChecks are the files whose sha256 must be equal in the
// machine on both Macs before a migration counts as done: present on every
// distro, and what a broken or mixed-up import would show first.
var DefaultMigrateChecks = []string{"/etc/os-release", "/etc/passwd", "/etc/group"}

// streamHeader is export-stream's first line.
type streamHeader struct {
	Name   string            `json:"name"`
	Size   int64             `json:"size"`
	SHA256 string            `json:"sha256"`
	State  string            `json:"state"` // the source machine's state: the copy ends the same
	Checks map[string]string `json:"checks"`
}

// importRequest is import-stream's first line.
type importRequest struct {
	streamHeader
	Timeout string `json:"timeout,omitempty"`
}

// importResult is import-stream's only output line.
type importResult struct {
	OK      bool    `json:"ok"`
	Name    string  `json:"name"`
	State   string  `json:"state,omitempty"`
	Stage   string  `json:"stage,omitempty"` // transfer, import, verification
	Error   string  `json:"error,omitempty"`
	Exit    int     `json:"exit,omitempty"`
	Seconds float64 `json:"seconds,omitempty"` // import, start and checks
}

// Stages of a migration, as errors name them.
const (
	stageExport   = "export"
	stageTransfer = "transfer"
	stageImport   = "import"
	stageVerify   = "verification"
)

// streamContext is ctx also cancelled by SIGHUP, with SIGPIPE turned into
// EPIPE errors (Go would otherwise die of SIGPIPE on a closed stdout, before
// any cleanup).
func streamContext(ctx context.Context) (context.Context, func()) {
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	return ctx, func() { stop(); signal.Stop(pipe) }
}

// privateTemp is a new directory only this user can read, under $TMPDIR.
func privateTemp(what string) (string, error) {
	dir, err := os.MkdirTemp("", "pyinfra-orbstack-"+what+"-")
	if err != nil {
		return "", fmt.Errorf("cannot make a temp directory for the archive: %w", err)
	}
	return dir, os.Chmod(dir, 0o700)
}

// checkPaths checks --check values: absolute paths on one line.
func checkPaths(paths []string) error {
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\x00\r\n") {
			return fmt.Errorf("--check %q: give an absolute path of a file in the machine, e.g. /etc/hostname", p)
		}
	}
	return nil
}

// hashFiles is the sha256 of each file in a running machine, read as root.
func hashFiles(ctx context.Context, c *orbctl.Client, name string, paths []string) (map[string]string, error) {
	sums := map[string]string{}
	for _, p := range paths {
		h := sha256.New()
		var stderr strings.Builder
		code, err := c.Run(ctx, orbctl.RunSpec{Machine: name, User: "root", Workdir: "/", Argv: []string{"cat", p}, Stdout: h, Stderr: &stderr})
		if err != nil {
			return nil, err
		}
		if code != 0 {
			return nil, fmt.Errorf("cannot read %s in machine %s (exit status %d): %s", p, name, code, strings.TrimSpace(stderr.String()))
		}
		sums[p] = hex.EncodeToString(h.Sum(nil))
	}
	return sums, nil
}

func newCmdMachineExportStream(f *Factory) *cobra.Command {
	var checks []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "export-stream NAME",
		Short: "Write a machine's archive to stdout after a JSON header (the source end of migrate)",
		Long: `The source end of "machine migrate", run there over ssh: "orbctl export" into a
private temp directory, then one JSON line {"name","size","sha256","state",
"checks":{PATH: sha256}} and exactly size bytes of the archive on stdout. A
stopped machine is started to read the --check files and stopped again. The
temp archive is removed on every way out (a closed stdout, SIGINT, SIGTERM,
SIGHUP).`,
		Example: `  pyinfra-orbstack machine export-stream web --check /etc/passwd | pyinfra-orbstack machine import-stream`,
		Hidden:  true,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkPaths(checks); err != nil {
				return &usageError{cmd: cmd, err: err}
			}
			ctx, stop := streamContext(cmd.Context())
			defer stop()
			return withOrbctl(f, func(c *orbctl.Client) error {
				return exportStream(ctx, c, f.Out, a[0], checks, timeout)
			})
		},
	}
	cmd.Flags().StringArrayVar(&checks, "check", nil, "a file whose sha256 goes into the header; repeatable")
	cmd.Flags().DurationVar(&timeout, "timeout", orbctl.DefaultReadyTimeout, "how long starting a stopped machine (to read the checked files) may take")
	return cmd
}

func exportStream(ctx context.Context, c *orbctl.Client, out io.Writer, name string, checks []string, timeout time.Duration) (err error) {
	m, err := c.Info(ctx, name)
	if err != nil {
		return err
	}
	h := streamHeader{Name: m.Name, State: m.State}
	if len(checks) > 0 {
		if m.State != "running" {
			// Reading files starts a machine: stop it again, whatever
			// happens, with a context that a signal has not ended.
			started := true
			defer func() {
				if !started {
					return
				}
				if serr := c.Stop(context.WithoutCancel(ctx), m.Name); serr != nil && err == nil {
					err = fmt.Errorf("cannot stop %s again after reading its files: %w", m.Name, serr)
				}
			}()
			if err := c.StartAndWait(ctx, m.Name, timeout, c.Start); err != nil {
				return err
			}
			if h.Checks, err = hashFiles(ctx, c, m.Name, checks); err != nil {
				return err
			}
			started = false
			if err := c.Stop(ctx, m.Name); err != nil {
				return err
			}
		} else if h.Checks, err = hashFiles(ctx, c, m.Name, checks); err != nil {
			return err
		}
	}
	dir, err := privateTemp("export")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// orbctl writes a file, never a pipe: whether it could is unrecorded.
	path := filepath.Join(dir, m.Name+".tar.zst")
	if err := c.Export(ctx, m.Name, path); err != nil {
		return err
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sum := sha256.New()
	if h.Size, err = io.Copy(sum, file); err != nil {
		return err
	}
	h.SHA256 = hex.EncodeToString(sum.Sum(nil))
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	line, _ := json.Marshal(h)
	if _, err := out.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("the receiving end went away: %w", err)
	}
	// Stop sending when a signal comes, and remove the archive at once,
	// even while a write to stdout blocks.
	sent := make(chan struct{})
	defer close(sent)
	go func() {
		select {
		case <-ctx.Done():
			file.Close()
			os.RemoveAll(dir)
		case <-sent:
		}
	}()
	if n, err := io.Copy(out, file); err != nil || n != h.Size {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("stream stopped after %d of %d bytes: %v", n, h.Size, err)
	}
	return nil
}

func newCmdMachineImportStream(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import-stream",
		Short: "Create a machine from a JSON header and an archive on stdin (the destination end of migrate)",
		Long: `The destination end of "machine migrate", run there over ssh: reads export-stream's
JSON line (plus "timeout") and the archive into a private temp directory,
checks its size and sha256, imports it under a temporary name, starts it,
compares the checked files' sha256, renames it and stops it if the source's was
stopped. Prints one JSON line {"ok","name","state"} or {"ok":false,"stage",
"error","exit"} and exits with that status. On any failure, early end of input
or SIGINT/SIGTERM/SIGHUP it deletes the temporary machine and the archive;
once the whole archive is in, it finishes without the controller.`,
		Example: `  pyinfra-orbstack machine export-stream web --check /etc/passwd | pyinfra-orbstack machine import-stream`,
		Hidden:  true,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := streamContext(cmd.Context())
			defer stop()
			res := importStream(ctx, f, f.In)
			line, _ := json.Marshal(res)
			// The controller may be gone: the outcome stands anyway.
			_, _ = f.Out.Write(append(line, '\n'))
			if !res.OK {
				fmt.Fprintf(f.Err, "Error: %s failed: %s\n", res.Stage, res.Error)
				return &exitError{code: res.Exit}
			}
			return nil
		},
	}
	return cmd
}

// importStream does the destination's whole part. Until the final rename,
// the machine exists only under a temporary name, deleted on any failure.
func importStream(ctx context.Context, f *Factory, in io.Reader) (res importResult) {
	fail := func(stage string, err error) importResult {
		return importResult{Name: res.Name, Stage: stage, Error: err.Error(), Exit: exitCode(err)}
	}
	r := bufio.NewReaderSize(in, 64<<10)
	line, err := r.ReadSlice('\n')
	if err != nil {
		return fail(stageTransfer, fmt.Errorf("no header from the source (%v)", err))
	}
	var req importRequest
	if err := json.Unmarshal(line, &req); err != nil || !orbctl.ValidName(req.Name) || req.Size <= 0 || len(req.SHA256) != 64 {
		return fail(stageTransfer, fmt.Errorf("bad header from the source: %.200q", line))
	}
	res.Name = req.Name
	timeout := orbctl.DefaultReadyTimeout
	if req.Timeout != "" {
		if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout <= 0 {
			return fail(stageTransfer, fmt.Errorf("bad timeout %q in the header", req.Timeout))
		}
	}
	c, err := f.Orbctl()
	if err != nil {
		return fail(stageImport, err)
	}
	if _, err := c.Info(ctx, req.Name); err == nil {
		return fail(stageImport, &orbctl.Error{Kind: orbctl.ErrMachineExists, Machine: req.Name,
			Message: fmt.Sprintf("a machine named %s already exists here", req.Name)})
	} else if !errors.Is(err, orbctl.ErrMachineNotFound) {
		return fail(stageImport, err)
	}

	dir, err := privateTemp("import")
	if err != nil {
		return fail(stageImport, err)
	}
	defer os.RemoveAll(dir)
	if free, ok := freeBytes(dir); ok && free < uint64(req.Size) {
		return fail(stageImport, fmt.Errorf("not enough space for the archive in %s: %s needed, %s free",
			filepath.Dir(dir), humanBytes(req.Size), humanBytes(int64(free))))
	}
	path := filepath.Join(dir, req.Name+".tar.zst")
	file, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fail(stageImport, err)
	}
	sum := sha256.New()
	// A signal while waiting for bytes: a blocked read of stdin cannot be
	// interrupted, so clean up (nothing is imported yet) and exit from here.
	var mu sync.Mutex
	receiving := true
	count := &migrateCounter{}
	go func() {
		<-ctx.Done()
		mu.Lock()
		if !receiving {
			mu.Unlock()
			return
		}
		os.RemoveAll(dir)
		line, _ := json.Marshal(importResult{Name: req.Name, Stage: stageTransfer, Exit: ExitFailure,
			Error: fmt.Sprintf("interrupted after %d of %d bytes", count.Load(), req.Size)})
		_, _ = f.Out.Write(append(line, '\n'))
		fmt.Fprintf(f.Err, "Error: %s failed: interrupted\n", stageTransfer)
		os.Exit(ExitFailure)
	}()
	n, err := io.Copy(io.MultiWriter(file, sum, count), io.LimitReader(r, req.Size))
	mu.Lock()
	receiving = false
	mu.Unlock()
	if cerr := file.Close(); err == nil && cerr != nil {
		return fail(stageImport, fmt.Errorf("cannot write the archive: %w", cerr))
	}
	if err != nil || n != req.Size {
		return fail(stageTransfer, fmt.Errorf("the stream ended after %d of %d bytes", n, req.Size))
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != req.SHA256 {
		return fail(stageTransfer, fmt.Errorf("the archive's sha256 is %s here, %s on the source", got, req.SHA256))
	}

	// From here on every byte is here: finish or clean up without the
	// controller (a signal still cleans up).
	start := time.Now()
	temp := "migrating-" + randomHex(4)
	if _, err := c.Info(ctx, temp); err == nil {
		temp = "migrating-" + randomHex(4) // never someone else's
	}
	imported := false
	defer func() {
		if !res.OK && imported {
			if derr := c.Delete(context.WithoutCancel(ctx), temp); derr != nil && !errors.Is(derr, orbctl.ErrMachineNotFound) {
				res.Error += fmt.Sprintf("; deleting the partial machine %s failed too: %v", temp, derr)
			}
		}
	}()
	imported = true // a failed import may still have left a machine
	if err := c.Import(ctx, path, temp); err != nil {
		return fail(stageImport, err)
	}
	os.RemoveAll(dir) // not needed any more: free the space now
	if err := c.StartAndWait(ctx, temp, timeout, c.Start); err != nil {
		return fail(stageImport, err)
	}
	if len(req.Checks) > 0 {
		paths := sortedKeys(req.Checks)
		got, err := hashFiles(ctx, c, temp, paths)
		if err != nil {
			return fail(stageVerify, err)
		}
		var bad []string
		for _, p := range paths {
			if got[p] != req.Checks[p] {
				bad = append(bad, fmt.Sprintf("%s (sha256 %.12s here, %.12s on the source)", p, got[p], req.Checks[p]))
			}
		}
		if len(bad) > 0 {
			return fail(stageVerify, fmt.Errorf("the imported machine's files differ from the source's: %s", strings.Join(bad, ", ")))
		}
	}
	if err := c.Rename(ctx, temp, req.Name); err != nil {
		return fail(stageImport, err)
	}
	temp = req.Name // what to delete if stopping fails
	state := "running"
	if req.State != "running" {
		if err := c.Stop(ctx, req.Name); err != nil {
			return fail(stageImport, err)
		}
		state = "stopped"
	}
	return importResult{OK: true, Name: req.Name, State: state, Seconds: time.Since(start).Seconds()}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freeBytes is the space left for an unprivileged user on dir's file system.
func freeBytes(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true //nolint:gosec,unconvert // Bsize is uint32 on darwin, int64 on linux
}

// migrateCounter counts what goes through it, readable from another goroutine.
type migrateCounter struct{ n atomic.Int64 }

func (c *migrateCounter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }
func (c *migrateCounter) Load() int64                 { return c.n.Load() }
