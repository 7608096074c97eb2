//go:build linux

package state

import (
	"fmt"
	"os"
	"regexp"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewULIDIsCrockfordBase32AndUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewULID()
		assert.Regexp(t, regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`), id)
		assert.False(t, seen[id])
		seen[id] = true
	}
}

// Concurrent updates from many goroutines (standing in for processes: the
// flock is per open file) never lose a machine.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, s.Update(func(inv *Inventory) error {
				inv.Machines = append(inv.Machines, &Machine{ID: NewULID(), Name: fmt.Sprint("m", i)})
				return nil
			}))
		}()
	}
	wg.Wait()
	require.NoError(t, s.View(func(inv *Inventory) error {
		assert.Len(t, inv.Machines, 50)
		return nil
	}))
}

func TestProcessAliveDetectsPIDReuse(t *testing.T) {
	st, zombie, err := ProcStart(os.Getpid())
	require.NoError(t, err)
	assert.False(t, zombie)
	assert.True(t, Process{PID: os.Getpid(), StartTime: st}.Alive())
	assert.False(t, Process{PID: os.Getpid(), StartTime: st + 1}.Alive(), "same PID, other start time")
	assert.False(t, Process{}.Alive())
}

func TestByKeyPrefersIDThenName(t *testing.T) {
	inv := &Inventory{Machines: []*Machine{{ID: "01AAAAAAAAAAAAAAAAAAAAAAAA", Name: "x"}, {ID: "01BBBBBBBBBBBBBBBBBBBBBBBB", Name: "01AAAAAAAAAAAAAAAAAAAAAAAA"}}}
	assert.Equal(t, "x", inv.ByKey("01AAAAAAAAAAAAAAAAAAAAAAAA").Name)
	assert.Equal(t, "01AAAAAAAAAAAAAAAAAAAAAAAA", inv.ByKey("01BBBBBBBBBBBBBBBBBBBBBBBB").Name)
	assert.Nil(t, inv.ByKey("nope"))
}
