// Command pyinfra-orbstack is the engine behind pyinfra's @orbstack connector.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/command"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
