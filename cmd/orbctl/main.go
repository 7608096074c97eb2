//go:build linux

// Command orbctl is the OrbStack CLI simulator (docs/simulator.md): machines
// are real isolated Linux environments. Called as `orb`, it behaves like orb.
package main

import (
	"os"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/sim/orbctlcmd"
)

func main() { os.Exit(orbctlcmd.Main(os.Args)) }
