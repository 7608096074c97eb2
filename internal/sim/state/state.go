//go:build linux

// Package state is the simulator's persistent inventory: one JSON file under
// $ORBSIM_HOME guarded by an flock, and one directory per machine. Every
// mutation runs inside Store.Update, so concurrent orbctl invocations never
// lose or corrupt a machine.
package state

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine is one simulated machine as persisted.
type Machine struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Distro      string `json:"distro"` // image name (archlinux, ubuntu, ...)
	Version     string `json:"version"`
	Arch        string `json:"arch"`
	Variant     string `json:"variant"`
	DefaultUser string `json:"default_username"`
	// Base is the lower layer of the machine's root ("/" or a configured rootfs).
	Base           string `json:"base"`
	Isolated       bool   `json:"isolated"`
	IsolateNetwork bool   `json:"isolate_network"`
	// ForwardSSHAgent is set by `config set machine.N.forward_ssh_agent`; unset,
	// a machine forwards the agent unless it is isolated ([MACHU] ADR).
	ForwardSSHAgent *bool    `json:"forward_ssh_agent,omitempty"`
	CPUs            int      `json:"cpus,omitempty"`
	MemoryMiB       int      `json:"memory_mib,omitempty"`
	DiskBytes       int64    `json:"disk_bytes,omitempty"`
	Mounts          []string `json:"mounts,omitempty"` // HOST:GUEST bind mounts (isolated machines)
	UserData        string   `json:"user_data,omitempty"`
	// Init is the machine's PID-1 process while it runs (zero when stopped).
	Init Process `json:"init"`
	// IP4 is the machine's address and Relay4 its NAME.orb.local relay
	// (2.x); both are kept across restarts when still free in the plan.
	IP4    string `json:"ip4,omitempty"`
	Relay4 string `json:"relay4,omitempty"`
}

// ForwardsSSHAgent is the machine's forward_ssh_agent setting.
func (m *Machine) ForwardsSSHAgent() bool {
	if m.ForwardSSHAgent != nil {
		return *m.ForwardSSHAgent
	}
	return !m.Isolated
}

// Process identifies a host process robustly against PID reuse.
type Process struct {
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
}

// Alive reports whether p still names the same, non-zombie process.
func (p Process) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, zombie, err := ProcStart(p.PID)
	return err == nil && !zombie && st == p.StartTime
}

// ProcStart reads a process's start time (field 22 of /proc/PID/stat) and
// whether it is a zombie.
func ProcStart(pid int) (uint64, bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, f[0] == "Z" || f[0] == "X", err
}

// Running reports whether the machine's init process is alive.
func (m *Machine) Running() bool { return m.Init.Alive() }

// StateWord is the record's "state" field. Creating, starting, stopping
// and deleting happen under the store lock, so only these two are observable.
func (m *Machine) StateWord() string {
	if m.Running() {
		return "running"
	}
	return "stopped"
}

// Inventory is the whole persisted state.
type Inventory struct {
	Machines []*Machine `json:"machines"`
	// DefaultID is the default machine's ULID ("" = none chosen yet).
	DefaultID string `json:"default_id"`
	// Config holds global `config set` values that differ from the defaults.
	Config map[string]string `json:"config"`
	// VMStopped is set by `orbctl stop` with no arguments: OrbStack is "off"
	// until a command auto-starts it.
	VMStopped bool `json:"vm_stopped"`
	// Subnet4 is the network.subnet4 OrbStack applied when it last started
	// ("" = the default): a `config set` takes effect after a restart.
	Subnet4 string `json:"subnet4,omitempty"`
}

// ByName finds a machine by name.
func (inv *Inventory) ByName(name string) *Machine {
	for _, m := range inv.Machines {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// ByID finds a machine by ULID.
func (inv *Inventory) ByID(id string) *Machine {
	for _, m := range inv.Machines {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// ByKey resolves ID first, then name, like the server's getByKey.
func (inv *Inventory) ByKey(key string) *Machine {
	if m := inv.ByID(key); m != nil {
		return m
	}
	return inv.ByName(key)
}

// Remove drops a machine from the inventory.
func (inv *Inventory) Remove(id string) {
	out := inv.Machines[:0]
	for _, m := range inv.Machines {
		if m.ID != id {
			out = append(out, m)
		}
	}
	inv.Machines = out
	if inv.DefaultID == id {
		inv.DefaultID = ""
	}
}

// Store is $ORBSIM_HOME.
type Store struct{ Home string }

// DefaultHome is $ORBSIM_HOME, else ~/.orbsim.
func DefaultHome() string {
	if h := os.Getenv("ORBSIM_HOME"); h != "" {
		if abs, err := filepath.Abs(h); err == nil {
			return abs
		}
		return h
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/root"
	}
	return filepath.Join(home, ".orbsim")
}

// HostError is a problem of the host (ORBSIM_HOME unwritable, disk full,
// corrupt state), not of the command line: the CLI prints it without usage.
type HostError struct {
	Err  error
	Hint string // what to do about it
}

func (e *HostError) Error() string {
	if e.Hint == "" {
		return "orbsim: " + e.Err.Error()
	}
	return "orbsim: " + e.Err.Error() + "; " + e.Hint
}

func (e *HostError) Unwrap() error { return e.Err }

// hostError wraps err with a hint that fits its cause.
func hostError(home string, err error) error {
	if err == nil {
		return nil
	}
	hint := ""
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		hint = "free space on the filesystem of ORBSIM_HOME=" + home + " (machines' files live there too) and retry"
	case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		hint = "point ORBSIM_HOME at a writable directory"
	}
	return &HostError{Err: err, Hint: hint}
}

// Open makes sure the home directory exists.
func Open(home string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(home, "machines"), 0o700); err != nil {
		return nil, hostError(home, fmt.Errorf("cannot create ORBSIM_HOME %s: %w", home, err))
	}
	return &Store{Home: home}, nil
}

// MachineDir is where a machine's layers and console log live.
func (s *Store) MachineDir(id string) string { return filepath.Join(s.Home, "machines", id) }

func (s *Store) path() string { return filepath.Join(s.Home, "state.json") }

func (s *Store) lock(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.Home, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

func (s *Store) load() (*Inventory, error) {
	inv := &Inventory{Config: map[string]string{}}
	b, err := os.ReadFile(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return inv, nil
	}
	if err != nil {
		return nil, hostError(s.Home, err)
	}
	if err := json.Unmarshal(b, inv); err != nil {
		return nil, &HostError{Err: fmt.Errorf("corrupt simulator state %s: %w", s.path(), err),
			Hint: "move it away to start afresh (machine files under " + filepath.Join(s.Home, "machines") + " are then orphaned)"}
	}
	if inv.Config == nil {
		inv.Config = map[string]string{}
	}
	return inv, nil
}

// reserveSlack is the room Update sets aside, beyond the current state's
// size, before it changes anything. A machine record is under 1 KiB, so this
// covers any one command. On a full disk the command then fails before it
// boots a machine whose record it could not save (which would leave an init
// running that no state file knows about).
const reserveSlack = 64 << 10

// reserve creates the temporary state file with room for the next save.
func (s *Store) reserve(size int64) (*os.File, error) {
	f, err := os.OpenFile(s.path()+".tmp", os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if size > 0 {
		err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	}
	if errors.Is(err, unix.EOPNOTSUPP) {
		_, err = f.WriteAt(make([]byte, size), 0)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("cannot save simulator state %s: %w", s.path(), err)
	}
	return f, nil
}

// save writes inv into the reserved file (overwriting allocated blocks needs
// no new space) and renames it over the state file.
func (s *Store) save(inv *Inventory, f *os.File) error {
	defer f.Close()
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("cannot save simulator state %s: %w", s.path(), err)
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		return err
	}
	return os.Rename(f.Name(), s.path())
}

// View reads the inventory under a shared lock.
func (s *Store) View(fn func(*Inventory) error) error {
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return hostError(s.Home, err)
	}
	defer unlock()
	inv, err := s.load()
	if err != nil {
		return err
	}
	return fn(inv)
}

// Update runs fn under the exclusive lock and saves the inventory afterwards,
// even when fn fails part-way (so a half-done operation is never lost). The
// room for that save is reserved before fn runs.
func (s *Store) Update(fn func(*Inventory) error) error {
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return hostError(s.Home, err)
	}
	defer unlock()
	inv, err := s.load()
	if err != nil {
		return err
	}
	var size int64
	if fi, err := os.Stat(s.path()); err == nil {
		size = fi.Size()
	}
	tmp, err := s.reserve(size + reserveSlack)
	if err != nil {
		return hostError(s.Home, err)
	}
	ferr := fn(inv)
	if err := s.save(inv, tmp); err != nil {
		return hostError(s.Home, err)
	}
	return ferr
}

// UpdateFreeing is Update for commands that only stop or remove machines
// (stop, delete). It reserves nothing first, so they still work on a full
// disk, which is when a user deletes machines to make room. A lost save is
// harmless for them: a stopped machine is recognised by its dead init.
func (s *Store) UpdateFreeing(fn func(*Inventory) error) error {
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return hostError(s.Home, err)
	}
	defer unlock()
	inv, err := s.load()
	if err != nil {
		return err
	}
	ferr := fn(inv)
	tmp, err := s.reserve(0)
	if err == nil {
		err = s.save(inv, tmp)
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		// What was stopped is stopped (its init is dead); a machine whose
		// directory went but whose record stays is removed by the next delete.
		return ferr
	}
	if err != nil {
		return hostError(s.Home, err)
	}
	return ferr
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewULID returns a 26-character ULID (48-bit ms time + 80 random bits).
func NewULID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	rand.Read(b[6:])
	// 128 bits -> 26 base32 chars (the first char carries 3 bits).
	out := make([]byte, 26)
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out)
}
