package rpc

import (
	"reflect"
	"testing"
)

func TestStatsCountOrbctlInvocationsByPurposeWithoutKeepingCommands(t *testing.T) {
	var ic invocationCounter
	for _, args := range [][]string{
		{"list", "-f", "json"},
		{"info", "web", "-f", "json"},
		{"run", "-m", "web", "-w", "", "sh", "-c", "AGENT", "pyinfra-orbstack-agent", "n1"},
		{"run", "-m", "web", "-u", "root", "-w", "", "sh", "-c", "SCRIPT", "pyinfra-orbstack-run", "n2"},
		{"run", "-m", "web", "-w", "", "sh", "-c", "PUT", "pyinfra-orbstack-put", "n3", "/etc/x", "10"},
		{"run", "-m", "db", "-w", "", "true"},
		{"run", "-m", "db", "-u", "root", "-w", "", "sh", "-c", "KILL"},
	} {
		ic.count(args)
	}
	got := ic.result()
	if !reflect.DeepEqual(got.Orbctl, map[string]int{"list": 1, "info": 1, "run": 5}) {
		t.Errorf("orbctl: %v", got.Orbctl)
	}
	if w := (MachineStats{SessionsStarted: 1, PerCallRuns: 1, Transfers: 1}); *got.Machines["web"] != w {
		t.Errorf("web: %+v", *got.Machines["web"])
	}
	if w := (MachineStats{Probes: 1, OtherRuns: 1}); *got.Machines["db"] != w {
		t.Errorf("db: %+v", *got.Machines["db"])
	}
}
