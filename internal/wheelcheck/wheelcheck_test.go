package wheelcheck

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The platform part of every wheel `make wheel` must produce.
var shippedPlatforms = []string{
	"macosx_12_0_arm64",
	"macosx_12_0_x86_64",
	"manylinux_2_17_x86_64.manylinux2014_x86_64",
	"manylinux_2_17_aarch64.manylinux2014_aarch64",
	"musllinux_1_2_x86_64",
	"musllinux_1_2_aarch64",
}

type member struct {
	name string
	data []byte
	mode os.FileMode
}

// writeWheel writes members plus a RECORD that matches them.
func writeWheel(t *testing.T, path string, members []member) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	zw := zip.NewWriter(f)
	distInfo := ""
	var record []string
	for _, m := range members {
		if strings.HasSuffix(m.name, ".dist-info/RECORD") {
			continue
		}
		if i := strings.Index(m.name, ".dist-info/"); i >= 0 {
			distInfo = m.name[:i+len(".dist-info/")]
		}
		h := &zip.FileHeader{Name: m.name, Method: zip.Deflate}
		h.SetMode(m.mode)
		w, err := zw.CreateHeader(h)
		require.NoError(t, err)
		_, err = w.Write(m.data)
		require.NoError(t, err)
		sum := sha256.Sum256(m.data)
		record = append(record, fmt.Sprintf("%s,sha256=%s,%d", m.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(m.data)))
	}
	record = append(record, distInfo+"RECORD,,")
	w, err := zw.Create(distInfo + "RECORD")
	require.NoError(t, err)
	_, err = io.WriteString(w, strings.Join(record, "\n")+"\n")
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())
}

func readMembers(t *testing.T, path string) []member {
	t.Helper()
	zr, err := zip.OpenReader(path)
	require.NoError(t, err)
	defer zr.Close()
	var out []member
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		out = append(out, member{f.Name, data, f.Mode()})
	}
	return out
}

func replace(members []member, name string, change func(*member)) []member {
	out := make([]member, 0, len(members))
	for _, m := range members {
		if m.name == name {
			change(&m)
			if m.name == "" {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

const testDistInfo = "pyinfra_orbstack-1.2.3.dist-info/"

// wheelAround builds the members of a wheel for platform holding binary.
func wheelAround(binary []byte, platform string) []member {
	var tags strings.Builder
	for _, p := range strings.Split(platform, ".") {
		tags.WriteString("Tag: py3-none-" + p + "\n")
	}
	return []member{
		{"pyinfra_orbstack/__init__.py", []byte(""), 0o644},
		{TypedMarker, []byte(""), 0o644},
		{BinaryPath, binary, 0o755},
		{testDistInfo + "METADATA", []byte("Metadata-Version: 2.4\nName: pyinfra-orbstack\nVersion: 1.2.3\n"), 0o644},
		{testDistInfo + "WHEEL", []byte("Wheel-Version: 1.0\nRoot-Is-Purelib: false\n" + tags.String()), 0o644},
		{testDistInfo + "entry_points.txt", []byte("[pyinfra.connectors]\norbstack = pyinfra_orbstack.connector:OrbStackConnector\n\n" +
			"[console_scripts]\npyinfra-orbstack = pyinfra_orbstack._binary:main\n"), 0o644},
	}
}

// pep440 spells a .ci/version semver the way wheels do: 1.2.4-dev.4 -> 1.2.4.dev4,
// 1.3.0-rc.1.dev.2 -> 1.3.0rc1.dev2 (written independently of pyshim/mkwheel.py).
func pep440(semver string) string {
	return strings.NewReplacer("-alpha.", "a", "-beta.", "b", "-rc.", "rc", "-dev.", ".dev", ".dev.", ".dev").Replace(semver)
}

func hostPlatformOrEmpty() string {
	return map[string]string{
		"linux/amd64":  "manylinux_2_17_x86_64.manylinux2014_x86_64",
		"linux/arm64":  "manylinux_2_17_aarch64.manylinux2014_aarch64",
		"darwin/arm64": "macosx_12_0_arm64",
		"darwin/amd64": "macosx_12_0_x86_64",
	}[runtime.GOOS+"/"+runtime.GOARCH]
}

// hostPlatform is the wheel platform this test binary itself would ship under.
func hostPlatform(t *testing.T) string {
	p := hostPlatformOrEmpty()
	if p == "" {
		t.Skipf("no wheel platform for %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	return p
}

// otherArch is a platform with the same OS as the host and the other CPU.
func otherArch(platform string) string {
	if strings.HasPrefix(platform, "macosx") {
		return strings.NewReplacer("x86_64", "arm64", "arm64", "x86_64").Replace(platform)
	}
	return strings.NewReplacer("x86_64", "aarch64", "aarch64", "x86_64").Replace(platform)
}

var (
	staticOnce   sync.Once
	staticBinary []byte
	staticErr    error
)

// hostBinary is a real static executable for this machine, built like the shipped ones.
func hostBinary(t *testing.T) []byte {
	t.Helper()
	staticOnce.Do(func() {
		out := filepath.Join(os.TempDir(), fmt.Sprintf("wheelcheck-static-%d", os.Getpid()))
		defer os.Remove(out)
		cmd := exec.Command("go", "build", "-o", out, "./testdata/static")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("go build ./testdata/static: %v\n%s", err, msg)
			return
		}
		staticBinary, staticErr = os.ReadFile(out)
	})
	require.NoError(t, staticErr)
	return staticBinary
}

// dynamicBinary is a real dynamically linked executable: this test binary (testify pulls in cgo's net).
func dynamicBinary(t *testing.T) []byte {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	data, err := os.ReadFile(exe)
	require.NoError(t, err)
	info, err := inspectBinary(data)
	require.NoError(t, err)
	if info.Static {
		t.Skip("this test binary is statically linked here; no dynamic executable to test with")
	}
	return data
}

func TestWheelAroundAMatchingBinaryPasses(t *testing.T) {
	platform := hostPlatform(t)
	path := filepath.Join(t.TempDir(), "pyinfra_orbstack-1.2.3-py3-none-"+platform+".whl")
	writeWheel(t, path, wheelAround(hostBinary(t), platform))

	w, err := Check(path)

	require.NoError(t, err)
	assert.Equal(t, "1.2.3", w.Version)
	assert.Equal(t, runtime.GOARCH, w.Binary.Arch)
	assert.EqualValues(t, 0o755, w.Binary.Mode)
}

func TestBrokenWheelsAreRejectedWithTheReason(t *testing.T) {
	platform := hostPlatform(t)
	bin := hostBinary(t)
	macPlatform := "macosx_12_0_x86_64"
	if runtime.GOOS == "darwin" {
		macPlatform = "manylinux_2_17_x86_64.manylinux2014_x86_64"
	}
	cases := []struct {
		name     string
		platform string
		members  []member
		want     string
	}{
		{"binary for the other CPU", otherArch(platform), wheelAround(bin, otherArch(platform)), "binary is " + runtime.GOOS + "/" + runtime.GOARCH + " but the tag"},
		{"binary for the other OS", macPlatform, wheelAround(bin, macPlatform), "but the tag " + strings.Split(macPlatform, ".")[0] + " needs"},
		{"binary not executable", platform, replace(wheelAround(bin, platform), BinaryPath, func(m *member) { m.mode = 0o644 }), "want a regular file with mode 0755"},
		{"binary missing", platform, replace(wheelAround(bin, platform), BinaryPath, func(m *member) { m.name = "" }), "no binary at " + BinaryPath},
		{"no py.typed marker", platform, replace(wheelAround(bin, platform), TypedMarker, func(m *member) { m.name = "" }), "no " + TypedMarker},
		{"no connector entry point", platform, replace(wheelAround(bin, platform), testDistInfo+"entry_points.txt", func(m *member) {
			m.data = []byte("[console_scripts]\npyinfra-orbstack = pyinfra_orbstack._binary:main\n")
		}), "entry_points.txt lacks [pyinfra.connectors] orbstack = pyinfra_orbstack.connector:OrbStackConnector"},
		{"pure wheel", platform, replace(wheelAround(bin, platform), testDistInfo+"WHEEL", func(m *member) {
			m.data = []byte(strings.Replace(string(m.data), "Root-Is-Purelib: false", "Root-Is-Purelib: true", 1))
		}), `Root-Is-Purelib: "true", want false`},
		{"WHEEL tag differs from the file name", platform, replace(wheelAround(bin, platform), testDistInfo+"WHEEL", func(m *member) {
			m.data = []byte("Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n")
		}), "WHEEL tags [py3-none-any] differ from the file name's"},
	}
	if runtime.GOOS == "linux" {
		cases = append(cases, struct {
			name     string
			platform string
			members  []member
			want     string
		}{"dynamically linked binary", platform, wheelAround(dynamicBinary(t), platform), "dynamically linked"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pyinfra_orbstack-1.2.3-py3-none-"+tc.platform+".whl")
			writeWheel(t, path, tc.members)

			_, err := Check(path)

			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRecordMismatchIsRejected(t *testing.T) {
	platform := hostPlatform(t)
	path := filepath.Join(t.TempDir(), "pyinfra_orbstack-1.2.3-py3-none-"+platform+".whl")
	writeWheel(t, path, wheelAround(hostBinary(t), platform))
	// Append a member after RECORD was written: RECORD no longer describes the wheel.
	members := readMembers(t, path)
	f, err := os.Create(path)
	require.NoError(t, err)
	zw := zip.NewWriter(f)
	for _, m := range append(members, member{"pyinfra_orbstack/extra.py", []byte("x = 1\n"), 0o644}) {
		h := &zip.FileHeader{Name: m.name}
		h.SetMode(m.mode)
		w, err := zw.CreateHeader(h)
		require.NoError(t, err)
		_, err = w.Write(m.data)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())

	_, err = Check(path)

	require.Error(t, err)
	assert.Contains(t, err.Error(), "pyinfra_orbstack/extra.py is in the wheel but not in RECORD")
}

// TestBuiltWheels checks the real wheels: `make wheel` sets PYINFRA_ORBSTACK_WHEELS
// to the directory it wrote them to (and PYINFRA_ORBSTACK_WHEEL_VERSION to their version).
func TestBuiltWheels(t *testing.T) {
	dir := os.Getenv("PYINFRA_ORBSTACK_WHEELS")
	if dir == "" {
		t.Skip("PYINFRA_ORBSTACK_WHEELS is not set; `make wheel` builds the wheels and runs this test on them")
	}
	paths, err := filepath.Glob(filepath.Join(dir, "pyinfra_orbstack-*.whl"))
	require.NoError(t, err)
	wantVersion := os.Getenv("PYINFRA_ORBSTACK_WHEEL_VERSION")

	wheels := map[string]*Wheel{} // platform -> wheel
	files := map[string]string{}
	for _, p := range paths {
		w, err := Check(p)
		require.NoError(t, err)
		if wantVersion != "" && w.Version != wantVersion {
			continue // an older build left in the directory
		}
		platform := strings.TrimSuffix(p[strings.LastIndex(p, "-none-")+len("-none-"):], ".whl")
		wheels[platform] = w
		files[platform] = p
		if w.Platforms[0].OS == "darwin" {
			assert.NotZero(t, w.Binary.MacOSMin, "%s: a Go darwin binary records its minimum macOS (LC_BUILD_VERSION)", p)
		}
	}
	var got []string
	for platform := range wheels {
		got = append(got, platform)
	}
	sort.Strings(got)
	want := append([]string(nil), shippedPlatforms...)
	sort.Strings(want)
	require.Equal(t, want, got, "the platform wheels in %s (version %q)", dir, wantVersion)

	// The binary this machine can run reports the wheel's version (semver vs PEP 440 spelling).
	if host, ok := wheels[hostPlatformOrEmpty()]; ok {
		exe := filepath.Join(t.TempDir(), "pyinfra-orbstack")
		require.NoError(t, os.WriteFile(exe, findMember(t, readMembers(t, files[hostPlatformOrEmpty()]), BinaryPath), 0o755))
		out, err := exec.Command(exe, "version").Output()
		require.NoError(t, err)
		fields := strings.Fields(string(out)) // pyinfra-orbstack 1.2.4-dev.4 (protocol 1)
		require.GreaterOrEqual(t, len(fields), 2, "version output %q", out)
		assert.Equal(t, host.Version, pep440(fields[1]), "`pyinfra-orbstack version` said %q", out)
	}

	// Each real binary in every other wheel is caught: the check is not vacuous for Mach-O either.
	for from, fw := range wheels {
		for to, tw := range wheels {
			if fw.Binary.OS == tw.Binary.OS && fw.Binary.Arch == tw.Binary.Arch {
				continue
			}
			fromBinary := findMember(t, readMembers(t, files[from]), BinaryPath)
			members := replace(readMembers(t, files[to]), BinaryPath, func(m *member) { m.data = fromBinary })
			swapped := filepath.Join(t.TempDir(), filepath.Base(files[to]))
			writeWheel(t, swapped, members)

			_, err := Check(swapped)

			require.Error(t, err, "%s binary in the %s wheel", from, to)
			assert.Contains(t, err.Error(), fmt.Sprintf("binary is %s/%s but the tag", fw.Binary.OS, fw.Binary.Arch))
		}
	}
}

func findMember(t *testing.T, members []member, name string) []byte {
	t.Helper()
	for _, m := range members {
		if m.name == name {
			return m.data
		}
	}
	t.Fatalf("no %s in wheel", name)
	return nil
}
