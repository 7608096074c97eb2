//go:build !linux

// Command orbctl is the OrbStack CLI simulator, which runs on Linux only: its
// machines are Linux namespaces. On a Mac, use OrbStack's own orbctl.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "orbsim: this orbctl simulates OrbStack on Linux only; on a Mac, use OrbStack's own orbctl (https://orbstack.dev)")
	os.Exit(1)
}
