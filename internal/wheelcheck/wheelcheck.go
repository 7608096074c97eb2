// Package wheelcheck verifies a built pyinfra-orbstack platform wheel: the Go binary
// inside it is executable and built for the platform its tags name, the entry points
// pyinfra and the console script need are there, and RECORD matches the contents.
//
// The wheels are written by pyshim/mkwheel.py; this is the independent check that
// `make wheel` runs over its output (see docs/releasing.md).
package wheelcheck

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// BinaryPath is where the shim looks for the Go binary inside the installed package.
const BinaryPath = "pyinfra_orbstack/bin/pyinfra-orbstack"

// TypedMarker (PEP 561) tells type checkers that the package's own hints are to be used.
const TypedMarker = "pyinfra_orbstack/py.typed"

// RequiredEntryPoints are the entry_points.txt lines a working install needs:
// pyinfra finds the @orbstack connector by the first, users run the binary by the second.
var RequiredEntryPoints = map[string]string{
	"pyinfra.connectors": "orbstack = pyinfra_orbstack.connector:OrbStackConnector",
	"console_scripts":    "pyinfra-orbstack = pyinfra_orbstack._binary:main",
}

// Platform is what a wheel platform tag promises about the binary.
type Platform struct {
	Tag  string
	OS   string // "darwin" or "linux"
	Arch string // "arm64" or "amd64" (Go's names)
	// MacOSMin is the oldest macOS the tag claims to support, e.g. 12.0 -> [12, 0].
	MacOSMin [2]int
}

var (
	macTag   = regexp.MustCompile(`^macosx_(\d+)_(\d+)_(arm64|x86_64)$`)
	linuxTag = regexp.MustCompile(`^(?:manylinux_\d+_\d+|manylinux2014|musllinux_\d+_\d+)_(x86_64|aarch64)$`)
)

var goArch = map[string]string{"arm64": "arm64", "aarch64": "arm64", "x86_64": "amd64"}

// ParsePlatform reads one platform tag (macosx_12_0_arm64, musllinux_1_2_x86_64, ...).
func ParsePlatform(tag string) (Platform, error) {
	if m := macTag.FindStringSubmatch(tag); m != nil {
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		return Platform{Tag: tag, OS: "darwin", Arch: goArch[m[3]], MacOSMin: [2]int{major, minor}}, nil
	}
	if m := linuxTag.FindStringSubmatch(tag); m != nil {
		return Platform{Tag: tag, OS: "linux", Arch: goArch[m[1]]}, nil
	}
	return Platform{}, fmt.Errorf("platform tag %q is not one we ship (macosx_*_{arm64,x86_64}, manylinux/musllinux_*_{x86_64,aarch64})", tag)
}

// Wheel is what Check found in a wheel.
type Wheel struct {
	Name      string
	Version   string
	Platforms []Platform
	Binary    BinaryInfo
}

// BinaryInfo describes the executable found at BinaryPath.
type BinaryInfo struct {
	Mode     uint32 // permission bits from the zip entry
	OS, Arch string
	Static   bool   // ELF without a program interpreter
	MacOSMin [2]int // from LC_BUILD_VERSION; zero when absent or not Mach-O
}

var wheelName = regexp.MustCompile(`^([A-Za-z0-9_.]+)-([^-]+)-(py3)-(none)-([^-]+)\.whl$`)

// Check opens the wheel at file and returns an error naming the first thing wrong.
func Check(file string) (*Wheel, error) {
	w, err := check(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path.Base(file), err)
	}
	return w, nil
}

func check(file string) (*Wheel, error) {
	m := wheelName.FindStringSubmatch(path.Base(file))
	if m == nil {
		return nil, errors.New("file name is not NAME-VERSION-py3-none-PLATFORM.whl")
	}
	w := &Wheel{Name: m[1], Version: m[2]}
	var fileTags []string
	for _, plat := range strings.Split(m[5], ".") {
		p, err := ParsePlatform(plat)
		if err != nil {
			return nil, err
		}
		w.Platforms = append(w.Platforms, p)
		fileTags = append(fileTags, "py3-none-"+plat)
	}

	zr, err := zip.OpenReader(file)
	if err != nil {
		return nil, fmt.Errorf("not a readable zip: %w", err)
	}
	defer zr.Close()
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[f.Name] = f
	}
	distInfo := fmt.Sprintf("%s-%s.dist-info/", w.Name, w.Version)

	wheelMeta, err := read(files, distInfo+"WHEEL")
	if err != nil {
		return nil, err
	}
	if err := checkWheelFile(wheelMeta, fileTags); err != nil {
		return nil, err
	}
	entryPoints, err := read(files, distInfo+"entry_points.txt")
	if err != nil {
		return nil, err
	}
	if err := checkEntryPoints(entryPoints); err != nil {
		return nil, err
	}
	if err := checkRecord(files, distInfo+"RECORD"); err != nil {
		return nil, err
	}

	if _, ok := files[TypedMarker]; !ok {
		return nil, fmt.Errorf("no %s: type checkers would ignore the package's type hints", TypedMarker)
	}

	bf, ok := files[BinaryPath]
	if !ok {
		return nil, fmt.Errorf("no binary at %s", BinaryPath)
	}
	if !bf.Mode().IsRegular() || bf.Mode().Perm() != 0o755 {
		return nil, fmt.Errorf("%s has mode %v, want a regular file with mode 0755 (-rwxr-xr-x)", BinaryPath, bf.Mode())
	}
	bin, err := read(files, BinaryPath)
	if err != nil {
		return nil, err
	}
	if w.Binary, err = inspectBinary(bin); err != nil {
		return nil, fmt.Errorf("%s: %w", BinaryPath, err)
	}
	w.Binary.Mode = uint32(bf.Mode().Perm())
	for _, p := range w.Platforms {
		if err := binaryServes(w.Binary, p); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func read(files map[string]*zip.File, name string) ([]byte, error) {
	f, ok := files[name]
	if !ok {
		return nil, fmt.Errorf("missing %s", name)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func checkWheelFile(data []byte, fileTags []string) error {
	var tags []string
	purelib := ""
	for _, line := range strings.Split(string(data), "\n") {
		key, value, _ := strings.Cut(line, ": ")
		switch key {
		case "Tag":
			tags = append(tags, strings.TrimSpace(value))
		case "Root-Is-Purelib":
			purelib = strings.TrimSpace(value)
		}
	}
	if purelib != "false" {
		return fmt.Errorf("WHEEL says Root-Is-Purelib: %q, want false (the wheel holds a platform binary)", purelib)
	}
	if strings.Join(tags, " ") != strings.Join(fileTags, " ") {
		return fmt.Errorf("WHEEL tags %v differ from the file name's %v", tags, fileTags)
	}
	return nil
}

func checkEntryPoints(data []byte) error {
	group := ""
	found := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			group = line[1 : len(line)-1]
			continue
		}
		if want, ok := RequiredEntryPoints[group]; ok && normalizeEntry(line) == normalizeEntry(want) {
			found[group] = true
		}
	}
	for group, want := range RequiredEntryPoints {
		if !found[group] {
			return fmt.Errorf("entry_points.txt lacks [%s] %s", group, want)
		}
	}
	return nil
}

func normalizeEntry(s string) string { return strings.Join(strings.Fields(s), "") }

// checkRecord verifies that RECORD lists every member with its sha256 and size.
func checkRecord(files map[string]*zip.File, recordName string) error {
	record, err := read(files, recordName)
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(record)), "\n") {
		parts := strings.Split(line, ",")
		if len(parts) != 3 {
			return fmt.Errorf("RECORD line %q is not PATH,HASH,SIZE", line)
		}
		name, hash, size := parts[0], parts[1], parts[2]
		listed[name] = true
		if name == recordName {
			continue
		}
		data, err := read(files, name)
		if err != nil {
			return fmt.Errorf("RECORD lists %s: %w", name, err)
		}
		sum := sha256.Sum256(data)
		want := "sha256=" + base64.RawURLEncoding.EncodeToString(sum[:])
		if hash != want || size != strconv.Itoa(len(data)) {
			return fmt.Errorf("RECORD entry for %s (%s, %s bytes) does not match its contents (%s, %d bytes)", name, hash, size, want, len(data))
		}
	}
	for name := range files {
		if !listed[name] && !strings.HasSuffix(name, "/") {
			return fmt.Errorf("%s is in the wheel but not in RECORD", name)
		}
	}
	return nil
}

// lcBuildVersion is LC_BUILD_VERSION, which debug/macho leaves as raw bytes.
const lcBuildVersion = 0x32

func inspectBinary(data []byte) (BinaryInfo, error) {
	r := bytes.NewReader(data)
	if f, err := elf.NewFile(r); err == nil {
		info := BinaryInfo{OS: "linux", Static: true}
		switch f.Machine {
		case elf.EM_X86_64:
			info.Arch = "amd64"
		case elf.EM_AARCH64:
			info.Arch = "arm64"
		default:
			info.Arch = f.Machine.String()
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				info.Static = false
			}
		}
		return info, nil
	}
	f, err := macho.NewFile(r)
	if err != nil {
		return BinaryInfo{}, errors.New("neither an ELF nor a Mach-O executable")
	}
	info := BinaryInfo{OS: "darwin"}
	switch f.Cpu {
	case macho.CpuArm64:
		info.Arch = "arm64"
	case macho.CpuAmd64:
		info.Arch = "amd64"
	default:
		info.Arch = f.Cpu.String()
	}
	for _, l := range f.Loads {
		raw := l.Raw()
		// build_version_command: cmd, cmdsize, platform, minos (xxxx.yy.zz), sdk, ntools.
		if len(raw) >= 16 && f.ByteOrder.Uint32(raw) == lcBuildVersion {
			minos := f.ByteOrder.Uint32(raw[12:16])
			info.MacOSMin = [2]int{int(minos >> 16), int(minos >> 8 & 0xff)}
		}
	}
	return info, nil
}

func binaryServes(b BinaryInfo, p Platform) error {
	if b.OS != p.OS || b.Arch != p.Arch {
		return fmt.Errorf("binary is %s/%s but the tag %s needs %s/%s", b.OS, b.Arch, p.Tag, p.OS, p.Arch)
	}
	if p.OS == "linux" && !b.Static {
		return fmt.Errorf("binary is dynamically linked but the tag %s needs a static one (build with CGO_ENABLED=0)", p.Tag)
	}
	if p.OS == "darwin" && b.MacOSMin != [2]int{} && macOSNewer(b.MacOSMin, p.MacOSMin) {
		return fmt.Errorf("binary needs macOS %d.%d but the tag %s promises %d.%d", b.MacOSMin[0], b.MacOSMin[1], p.Tag, p.MacOSMin[0], p.MacOSMin[1])
	}
	return nil
}

func macOSNewer(a, b [2]int) bool { return a[0] > b[0] || a[0] == b[0] && a[1] > b[1] }
