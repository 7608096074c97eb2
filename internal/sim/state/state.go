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
	Base           string   `json:"base"`
	Isolated       bool     `json:"isolated"`
	IsolateNetwork bool     `json:"isolate_network"`
	CPUs           int      `json:"cpus,omitempty"`
	MemoryMiB      int      `json:"memory_mib,omitempty"`
	DiskBytes      int64    `json:"disk_bytes,omitempty"`
	Mounts         []string `json:"mounts,omitempty"` // HOST:GUEST bind mounts (isolated machines)
	UserData       string   `json:"user_data,omitempty"`
	// Init is the machine's PID-1 process while it runs (zero when stopped).
	Init Process `json:"init"`
	// IPIndex is N in 198.19.249.N; kept across restarts when still free.
	IPIndex int `json:"ip_index,omitempty"`
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

// Open makes sure the home directory exists.
func Open(home string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(home, "machines"), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create ORBSIM_HOME %s: %w", home, err)
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
		return nil, err
	}
	if err := json.Unmarshal(b, inv); err != nil {
		return nil, fmt.Errorf("corrupt simulator state %s: %w", s.path(), err)
	}
	if inv.Config == nil {
		inv.Config = map[string]string{}
	}
	return inv, nil
}

func (s *Store) save(inv *Inventory) error {
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path())
}

// View reads the inventory under a shared lock.
func (s *Store) View(fn func(*Inventory) error) error {
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlock()
	inv, err := s.load()
	if err != nil {
		return err
	}
	return fn(inv)
}

// Update runs fn under the exclusive lock and saves the inventory afterwards,
// even when fn fails part-way (so a half-done operation is never lost).
func (s *Store) Update(fn func(*Inventory) error) error {
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	inv, err := s.load()
	if err != nil {
		return err
	}
	ferr := fn(inv)
	if err := s.save(inv); err != nil {
		return err
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
