package command

import (
	"strings"
	"testing"
)

func TestOrbctlUsageErrorIsPrefixedOnce(t *testing.T) {
	withMachines(t, nil)

	code, _, stderr := run(t, nil, "machine", "create", "nosuchdistro", "x1")

	if code == 0 {
		t.Fatalf("creating from an unknown distro succeeded")
	}
	first := strings.SplitN(stderr, "\n", 2)[0]
	if !strings.HasPrefix(first, "Error: ") || strings.HasPrefix(first, "Error: Error:") {
		t.Fatalf("want one Error: prefix and orbctl's message, got %q", first)
	}
	if !strings.Contains(first, "invalid distro: nosuchdistro") {
		t.Fatalf("orbctl's own message is lost: %q", first)
	}
}

func TestWrongOrbctlOverrideIsNamedOnce(t *testing.T) {
	t.Setenv("PYINFRA_ORBSTACK_ORBCTL", "/nonexistent/orbctl")

	code, _, stderr := run(t, nil, "list")

	if code == 0 {
		t.Fatalf("list succeeded without an orbctl")
	}
	if n := strings.Count(stderr, "/nonexistent/orbctl"); n != 1 {
		t.Fatalf("the wrong path should be named once, %d times in %q", n, stderr)
	}
}
