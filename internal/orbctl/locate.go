package orbctl

import (
	"os"
	"os/exec"
	"path/filepath"
)

// EnvOverride names the environment variable that points at a specific orbctl
// (tests use it for the simulator; users for an unusual install).
const EnvOverride = "PYINFRA_ORBSTACK_ORBCTL"

// installLocations are where OrbStack puts orbctl when it is not on PATH: the
// app installer's symlink, Homebrew on Apple Silicon, the per-user install, and
// the binary inside the app bundle itself.
func installLocations(home string) []string {
	locs := []string{"/usr/local/bin/orbctl", "/opt/homebrew/bin/orbctl"}
	if home != "" {
		locs = append(locs, filepath.Join(home, ".orbstack", "bin", "orbctl"))
	}
	return append(locs, "/Applications/OrbStack.app/Contents/MacOS/bin/orbctl")
}

// Locate finds orbctl: the override (which must exist: a typo there should not
// silently fall back to another orbctl), then PATH, then OrbStack's usual install
// locations. getenv is os.Getenv in production.
func Locate(getenv func(string) string) (string, error) {
	if override := getenv(EnvOverride); override != "" {
		if isExecutable(override) {
			return override, nil
		}
		return "", &Error{Kind: ErrOrbctlNotFound, Searched: []string{EnvOverride + "=" + override},
			Message: EnvOverride + " is set to " + override + ", which is not an executable file"}
	}
	searched := []string{"$PATH"}
	if p, err := exec.LookPath("orbctl"); err == nil {
		return p, nil
	}
	for _, p := range installLocations(getenv("HOME")) {
		searched = append(searched, p)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", &Error{Kind: ErrOrbctlNotFound, Searched: searched,
		Message: "orbctl not found: install OrbStack (https://orbstack.dev) or set " + EnvOverride}
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
