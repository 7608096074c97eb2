package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// transferAnswer runs the transfer subcommand's code on input and returns
// its answer (after a get's chunks, kept in got).
func transferAnswer(t *testing.T, s *Server, input io.Reader, get, refused bool) (json.RawMessage, *jsonrpc2.Error, []byte) {
	t.Helper()
	var out bytes.Buffer
	// As the relay does, stdin stays open until the answer has come.
	answered := make(chan struct{})
	if !refused {
		input = io.MultiReader(input, waitReader(answered))
	}
	if err := s.Transfer(context.Background(), input, &out); err != nil {
		t.Fatalf("Transfer: %v", err)
	}
	close(answered)
	var got bytes.Buffer
	var dst io.Writer
	if get {
		dst = &got
	}
	r := bufio.NewReader(&out)
	result, e, err := ReadTransferAnswer(r, dst)
	if err != nil {
		t.Fatalf("reading the answer %q: %v", out.String(), err)
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Fatalf("after the answer: %q", rest)
	}
	return result, e, got.Bytes()
}

// transferWorld is a machine "web", a client connection to a Server for
// setting up and checking, and a Server to run transfers on.
func transferWorld(t *testing.T) (*testConn, *Server) {
	path, _ := orbctltest.WithMachines(t, map[string]string{"web": "running"})
	env := map[string]string{orbctl.EnvOverride: path, "HOME": t.TempDir()}
	c := startServer(t, env)
	s := NewServer(Options{Getenv: func(k string) string { return env[k] }, Logger: log.New(io.Discard, "", 0)})
	return c, s
}

func TestTransferRefusesABadHeaderClearly(t *testing.T) {
	s := paramsServer()
	huge := `{"method":"file.get","params":{"machine":"web","remote_path":"/x","escalation":{"command":"` + strings.Repeat("a", MaxTransferHeader) + `"}}}` + "\n"
	for input, says := range map[string]string{
		"":                         "the input was empty",
		"{\"method\":\"file.put\"": "ended before its newline",
		"not json\n":               "not a JSON object",
		"[1]\n":                    "not a JSON object",
		`{"method":"command.run","params":{}}` + "\n":                                                                                     `method must be "file.put" or "file.get"`,
		`{"method":"file.get"}` + "\n":                                                                                                    "params must be an object",
		`{"method":"file.get","params":{"remote_path":"/x"}}` + "\n":                                                                      "needs a machine name",
		`{"method":"file.put","params":{"machine":"web","remote_path":"/x"}}` + "\n":                                                      "needs size",
		`{"method":"file.put","params":{"machine":"web","remote_path":"/x","size":-1}}` + "\n":                                            "needs size",
		`{"method":"file.get","params":{"machine":"web","remote_path":"/x","escalation":{"command":"sudo","stage_dir":"/tmp/x"}}}` + "\n": "stage_dir",
		huge: "longer than 1048576 bytes",
	} {
		_, e, _ := transferAnswer(t, s, strings.NewReader(input), true, true)
		if e == nil || e.Code != jsonrpc2.CodeInvalidParams || !strings.Contains(e.Message, says) {
			t.Errorf("header %s: got %v, want -32602 saying %q", quoteStart(input), e, says)
		}
	}
}

func TestTransferPutAndGetRunTheSameCodeAsTheMethods(t *testing.T) {
	c, s := transferWorld(t)
	dir, _ := c.sh("web", "", "mktemp -d")
	dir = strings.TrimSpace(dir)
	data := bytes.Repeat([]byte("0123456789abcdef"), 200000) // 3.2 MB: many chunks
	header := fmt.Sprintf(`{"method":"file.put","params":{"machine":"web","remote_path":%q,"size":%d}}`+"\n", dir+"/f", len(data))
	result, e, _ := transferAnswer(t, s, io.MultiReader(strings.NewReader(header), bytes.NewReader(data)), false, false)
	if e != nil || string(result) != fmt.Sprintf(`{"size":%d}`, len(data)) {
		t.Fatalf("put: %s %v", result, e)
	}
	header = fmt.Sprintf(`{"method":"file.get","params":{"machine":"web","remote_path":%q}}`+"\n", dir+"/f")
	result, e, got := transferAnswer(t, s, strings.NewReader(header), true, false)
	if e != nil || !bytes.Equal(got, data) || string(result) != fmt.Sprintf(`{"size":%d}`, len(data)) {
		t.Fatalf("get: %s %v, %d bytes", result, e, len(got))
	}
	header = fmt.Sprintf(`{"method":"file.get","params":{"machine":"web","remote_path":%q}}`+"\n", dir+"/none")
	_, e, got = transferAnswer(t, s, strings.NewReader(header), true, false)
	if e == nil || e.Code != CodeIOError || !strings.Contains(e.Message, "No such file") || len(got) != 0 {
		t.Fatalf("get of a missing file: %v", e)
	}
}

// The client gone mid-put (stdin ends early): the machine keeps the old file.
func TestTransferPutCutShortKeepsTheDestination(t *testing.T) {
	c, s := transferWorld(t)
	dir, _ := c.sh("web", "", "mktemp -d")
	dest := strings.TrimSpace(dir) + "/conf"
	c.sh("web", "", "echo old > "+dest)
	header := fmt.Sprintf(`{"method":"file.put","params":{"machine":"web","remote_path":%q,"size":1000000}}`+"\n", dest)
	start := time.Now()
	var out bytes.Buffer
	if err := s.Transfer(context.Background(), strings.NewReader(header+"only this"), &out); err != nil {
		t.Fatal(err)
	}
	_, e, _ := ReadTransferAnswer(bufio.NewReader(&out), nil)
	if e == nil || e.Code != CodeIOError || !strings.Contains(e.Message, "cut short") {
		t.Fatalf("a put cut short: %v", e)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("a put cut short took %s", time.Since(start))
	}
	if got, _ := c.sh("web", "", "cat "+dest+"; ls -A "+strings.TrimSpace(dir)); got != "old\nconf" {
		t.Fatalf("after a put cut short: %q", got)
	}
}

// waitReader ends when done is closed.
type waitReader chan struct{}

func (w waitReader) Read([]byte) (int, error) { <-w; return 0, io.EOF }

// FuzzTransferHeader: any header line is refused with -32602 or passes
// every check file.put/file.get make; nothing panics.
func FuzzTransferHeader(f *testing.F) {
	for _, seed := range []string{
		`{"method":"file.put","params":{"machine":"web","remote_path":"/etc/x","size":3}}`,
		`{"method":"file.get","params":{"machine":"web","user":"root","remote_path":"x"}}`,
		`{"method":"file.get","params":{"machine":"web","remote_path":"/x","escalation":{"command":"sudo -n sh -c 'sh /tmp/pyinfra-orbstack-0123456789abcdef/run'","stage_dir":"/tmp/pyinfra-orbstack-0123456789abcdef"}}}`,
		`{"method":"file.put","params":null}`,
		`{"method":"file.put","params":{"machine":"web","remote_path":"--","size":-1}}`,
		`{"method":1}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(seed + "\n"))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		h, p, err := ParseTransferHeader(bufio.NewReader(bytes.NewReader(line)))
		if err != nil {
			e, ok := err.(*jsonrpc2.Error)
			if !ok || e.Code != jsonrpc2.CodeInvalidParams && e.Code != CodeIOError {
				t.Fatalf("%q: refused with %v", line, err)
			}
			return
		}
		if h.Method != MethodFilePut && h.Method != MethodFileGet {
			t.Fatalf("%q: method %q passed", line, h.Method)
		}
		if p.Machine == "" || p.RemotePath == "" || p.RemotePath == "--" || p.Escalation != nil && checkEscalation(p.Escalation) != nil {
			t.Fatalf("%q: params %+v passed", line, p)
		}
		if h.Method == MethodFilePut && (p.Size == nil || *p.Size < 0) {
			t.Fatalf("%q: a put without a size passed", line)
		}
		if bytes.IndexByte(line, '\n') < 0 {
			t.Fatalf("%q: a header without its newline passed", line)
		}
	})
}
