//go:build linux

package orbctlcmd

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The run parser rules of reference §6, one case per rule.
func TestParseRunFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want RunFlags
	}{
		{"short flag with separate value", []string{"-m", "vm", "id"}, RunFlags{Machine: "vm", MachineSet: true, Command: []string{"id"}}},
		{"long flag", []string{"--machine", "vm", "id"}, RunFlags{Machine: "vm", MachineSet: true, Command: []string{"id"}}},
		{"single-dash long flag", []string{"-machine", "vm", "id"}, RunFlags{Machine: "vm", MachineSet: true, Command: []string{"id"}}},
		{"flag=value", []string{"-m=vm", "-u=root", "-w=/tmp", "id"}, RunFlags{Machine: "vm", MachineSet: true, User: "root", UserSet: true, Workdir: "/tmp", WorkdirSet: true, WorkdirFlag: "-w", Command: []string{"id"}}},
		{"empty workdir is set", []string{"-w", "", "pwd"}, RunFlags{WorkdirSet: true, WorkdirFlag: "-w", Command: []string{"pwd"}}},
		{"the workdir token is kept", []string{"--workdir=/x", "pwd"}, RunFlags{Workdir: "/x", WorkdirSet: true, WorkdirFlag: "--workdir", Command: []string{"pwd"}}},
		{"repeated flag: last wins", []string{"-m", "a", "-m", "b", "id"}, RunFlags{Machine: "b", MachineSet: true, Command: []string{"id"}}},
		{"booleans", []string{"-s", "-p", "echo", "hi"}, RunFlags{Shell: true, Path: true, Command: []string{"echo", "hi"}}},
		{"boolean =false", []string{"-s=false", "echo"}, RunFlags{Command: []string{"echo"}}},
		{"first non-dash ends flags; the rest is verbatim", []string{"-m", "vm", "cmd", "-a", "-h", "--"}, RunFlags{Machine: "vm", MachineSet: true, Command: []string{"cmd", "-a", "-h", "--"}}},
		{"no command: interactive shell", []string{"-m", "vm"}, RunFlags{Machine: "vm", MachineSet: true}},
		{"help", []string{"-h"}, RunFlags{Help: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseRunFlags(c.args)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestParseRunFlagsErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"a literal -- is an unknown flag", []string{"-m", "vm", "--", "true"}, "unknown flag --"},
		{"unknown short flag", []string{"-x", "true"}, "unknown flag -x"},
		{"unknown long flag with value", []string{"--nope=1", "true"}, "unknown flag --nope"},
		{"missing value at the end", []string{"-m"}, "missing value for flag -m"},
		{"bad boolean", []string{"-s=maybe", "x"}, "invalid value for flag -s: maybe"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRunFlags(c.args)
			assert.EqualError(t, err, c.msg)
		})
	}
}

func TestVersion(t *testing.T) {
	v, err := ParseVersion("2.2.3")
	require.NoError(t, err)
	assert.Equal(t, 2020300, v.Code(), "code is major·10⁶ + minor·10⁴ + patch·10²")
	assert.True(t, v.AtLeast(1, 11, 3))
	assert.False(t, v.AtLeast(2, 3, 0))
	_, err = ParseVersion("2.2")
	assert.ErrorContains(t, err, "MAJOR.MINOR.PATCH")
}

func TestByteCountSI(t *testing.T) {
	assert.Equal(t, "962.9 MB", byteCountSI(962924544))
	assert.Equal(t, "999 B", byteCountSI(999))
	assert.Equal(t, "1.0 kB", byteCountSI(1000))
}

func TestSplitMachineKey(t *testing.T) {
	name, sub, ok := splitMachineKey(`machine."a.b".username`)
	assert.True(t, ok)
	assert.Equal(t, "a.b", name)
	assert.Equal(t, "username", sub)
	name, sub, ok = splitMachineKey("machine.web.cpu")
	assert.Equal(t, []any{"web", "cpu", true}, []any{name, sub, ok})
	_, _, ok = splitMachineKey("cpu")
	assert.False(t, ok)
}
