// Package buildinfo holds facts stamped into the binary at build time.
package buildinfo

// Version is set by the Makefile with
// -ldflags "-X github.com/pyinfra-orbstack/pyinfra-orbstack/internal/buildinfo.Version=…".
var Version = "0.0.0-dev"
