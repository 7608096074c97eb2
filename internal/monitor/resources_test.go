package monitor

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

func TestProbeOnThisHostMatchesStatfs(t *testing.T) {
	out, err := exec.Command("sh", "-c", ProbeScript).Output()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseResources(out)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err != nil {
		t.Fatal(err)
	}
	total := st.Blocks * uint64(st.Bsize)
	if r.Disk.Total == nil || *r.Disk.Method != "df" || diff(*r.Disk.Total, total) > total/100 {
		t.Fatalf("disk %+v, statfs says a total of %d", r.Disk, total)
	}
	if r.Memory.Total == 0 || r.Memory.Used == 0 || r.Memory.Used >= r.Memory.Total || r.CPUs < 1 || r.Processes < 2 || r.Load == nil {
		t.Fatalf("implausible: %+v", r)
	}
}

func TestProbeCutShortIsAnError(t *testing.T) {
	if _, err := ParseResources([]byte("load=0.1 0.2 0.3\ncpus=2\n")); err == nil {
		t.Fatal("a probe without its last line was accepted")
	}
}

func TestOldKernelsWithoutMemAvailable(t *testing.T) {
	r, err := ParseResources([]byte("mem_MemTotal=1000\nmem_MemFree=100\nmem_Buffers=50\nmem_Cached=250\nmissing=\n"))
	if err != nil || r.Memory.Total != 1000*1024 || r.Memory.Used != 600*1024 {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestResourcesOfASimulatorMachineAreItsOwn(t *testing.T) {
	c := orbctl.New(orbctltest.Simulator(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Create(ctx, orbctl.CreateOptions{Image: "debian", Name: "probe"}); err != nil {
		t.Fatal(err)
	}
	r, err := ReadResources(ctx, c, "probe")
	if err != nil {
		t.Fatal(err)
	}
	// PID 1 of a new machine is seconds old, though the kernel has run for longer.
	if r.UptimeSource != "init" || r.Uptime > 300 || r.Processes < 1 || r.Disk.Total == nil {
		t.Fatalf("%+v", r)
	}
}

func diff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}
