//go:build linux

// Package distro knows the distros, versions and machine names orbctl accepts
// (orbctl reference §9 and §5). It only answers questions; it never touches disk.
package distro

import (
	"fmt"
	"regexp"
	"runtime"
	"sort"
)

// Image is what a machine record reports under "image".
type Image struct {
	Distro  string // image name, e.g. "archlinux" for the CLI word "arch"
	Version string // after alias resolution, e.g. "bookworm" for "12"
	Arch    string
	Variant string // "default", "openrc" (gentoo) or "cloud" (-c)
}

type entry struct {
	image    string
	latest   string
	versions []string          // accepted versions besides aliases
	aliases  map[string]string // number -> codename
	noCloud  bool
	variant  string
}

// table follows the reference's §9 (Aug 2025 image list). Ubuntu's latest is
// "questing" for 2.x ([MACHU] reports it), "plucky" before.
var table = map[string]entry{
	"alma":      {image: "almalinux", latest: "9", versions: []string{"8", "9", "10"}},
	"alpine":    {image: "alpine", latest: "3.22", versions: []string{"3.19", "3.20", "3.21", "3.22", "edge"}},
	"arch":      {image: "archlinux", latest: "current", versions: []string{"current"}, noCloud: true},
	"centos":    {image: "centos", latest: "9-Stream", versions: []string{"9-Stream", "10-Stream"}},
	"debian":    {image: "debian", latest: "bookworm", versions: []string{"buster", "bullseye", "bookworm", "trixie", "forky"}, aliases: map[string]string{"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}},
	"devuan":    {image: "devuan", latest: "daedalus", versions: []string{"chimaera", "daedalus", "excalibur"}, aliases: map[string]string{"4": "chimaera", "5": "daedalus", "6": "excalibur"}},
	"fedora":    {image: "fedora", latest: "42", versions: []string{"40", "41", "42", "43"}},
	"gentoo":    {image: "gentoo", latest: "current", versions: []string{"current"}, noCloud: true, variant: "openrc"},
	"kali":      {image: "kali", latest: "current", versions: []string{"current"}},
	"nixos":     {image: "nixos", latest: "25.05", versions: []string{"25.05"}, noCloud: true},
	"openeuler": {image: "openeuler", latest: "25.03", versions: []string{"20.03", "22.03", "24.03", "25.03"}},
	"opensuse":  {image: "opensuse", latest: "15.6", versions: []string{"15.5", "15.6", "tumbleweed"}},
	"oracle":    {image: "oracle", latest: "9", versions: []string{"8", "9"}},
	"rocky":     {image: "rockylinux", latest: "9", versions: []string{"8", "9"}},
	"ubuntu":    {image: "ubuntu", latest: "plucky", versions: []string{"focal", "jammy", "noble", "oracular", "plucky", "questing"}, aliases: map[string]string{"20.04": "focal", "22.04": "jammy", "24.04": "noble", "24.10": "oracular", "25.04": "plucky", "25.10": "questing"}},
	"void":      {image: "voidlinux", latest: "current", versions: []string{"current"}, noCloud: true},
}

// Words is the sorted list of CLI distro words, as `create --help` prints them.
func Words() []string {
	w := make([]string, 0, len(table))
	for k := range table {
		w = append(w, k)
	}
	sort.Strings(w)
	return w
}

// Known reports whether word is a CLI distro word.
func Known(word string) bool { _, ok := table[word]; return ok }

// ImageName maps a CLI word to the image name records report.
func ImageName(word string) string { return table[word].image }

// Arches are the architectures `create -a` accepts. The simulator runs every
// machine natively; the arch is only recorded (no amd64/arm64 emulation).
func Arches() []string { return []string{"arm64", "amd64"} }

// HostArch is the arch a machine gets without -a.
func HostArch() string {
	if runtime.GOARCH == "arm64" {
		return "arm64"
	}
	return "amd64"
}

// ErrImageNotFound is the server-side "unknown version" error; its text
// reproduces the Go %v of OrbStack's ImageSpec.
type ErrImageNotFound struct{ Image Image }

func (e ErrImageNotFound) Error() string {
	return fmt.Sprintf("make rootfs: image not found: {%s %s %s %s}", e.Image.Distro, e.Image.Version, e.Image.Arch, e.Image.Variant)
}

// Resolve turns word[:version] into the image a record stores. major is the
// reported OrbStack major version (it picks ubuntu's latest).
func Resolve(word, version, arch string, cloud bool, major int) (Image, error) {
	e := table[word]
	img := Image{Distro: e.image, Arch: arch, Variant: "default"}
	if e.variant != "" {
		img.Variant = e.variant
	}
	if cloud {
		img.Variant = "cloud"
	}
	switch {
	case version == "":
		img.Version = e.latest
		if word == "ubuntu" && major >= 2 {
			img.Version = "questing"
		}
	case e.aliases[version] != "":
		img.Version = e.aliases[version]
	default:
		img.Version = version
		found := false
		for _, v := range e.versions {
			if v == version {
				found = true
			}
		}
		if !found {
			return img, ErrImageNotFound{img}
		}
	}
	if cloud && e.noCloud {
		return img, fmt.Errorf("cloud-init not supported for '%s'", e.image)
	}
	return img, nil
}

// nameRE is the server's rule (reference §5): at least two characters, the
// first a letter or digit, then letters, digits, '-' and '.'.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-.]+$`)

var reserved = map[string]bool{"default": true, "vm": true, "host": true, "services": true, "gateway": true, "k8s": true, "docker": true}

// MaxNameLen is the longest machine name: the name is the machine's
// hostname, and Linux caps hostnames at 64 bytes (HOST_NAME_MAX). The
// reference gives OrbStack's regex no length limit; OrbStack's machines are
// Linux containers named after the machine, so a longer name cannot work
// there either, but how OrbStack words that failure is unknown. We reject it
// up front as an invalid name rather than fail at boot.
const MaxNameLen = 64

// ValidName applies the server's machine-name rule.
func ValidName(name string) bool {
	return nameRE.MatchString(name) && !reserved[name] && len(name) <= MaxNameLen
}

// InvalidNameMessage is the server's error text for a name ValidName
// rejects, plus why when the reason is not obvious (its length).
func InvalidNameMessage(name string) string {
	msg := fmt.Sprintf("invalid machine name '%s'", name)
	if len(name) > MaxNameLen && nameRE.MatchString(name) {
		msg += fmt.Sprintf(" (%d characters; at most %d, the Linux hostname limit)", len(name), MaxNameLen)
	}
	return msg
}
