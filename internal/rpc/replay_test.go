package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// exchangeFile is one testdata/protocol/*.json file (format: docs/protocol.md,
// "Example exchanges").
type exchangeFile struct {
	Description string            `json:"description"`
	Machines    map[string]string `json:"machines"`
	Exchange    []struct {
		Send json.RawMessage `json:"send"`
		Recv json.RawMessage `json:"recv"`
		EOF  bool            `json:"eof"`
	} `json:"exchange"`
}

// TestProtocolExchanges replays every example exchange byte for byte over the
// wire format, as the Python tests do against the built binary.
func TestProtocolExchanges(t *testing.T) {
	dir := filepath.Join(orbctltest.RepoRoot(), "testdata", "protocol")
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	frames, _ := filepath.Glob(filepath.Join(dir, "frames", "*.json"))
	files = append(files, frames...)
	if len(files) == 0 {
		t.Fatal("no testdata/protocol/*.json files")
	}
	for _, file := range files {
		name, _ := filepath.Rel(dir, file)
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var ex exchangeFile
			if err := json.Unmarshal(raw, &ex); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			replay(t, ex)
		})
	}
}

func replay(t *testing.T, ex exchangeFile) {
	path, _ := orbctltest.WithMachines(t, ex.Machines)
	env := map[string]string{orbctl.EnvOverride: path, "HOME": t.TempDir()}
	serverEnd, clientEnd := net.Pipe()
	srv := NewServer(Options{Version: "0.0.0-test", Getenv: func(k string) string { return env[k] },
		Logger: log.New(io.Discard, "", 0)})
	go srv.Serve(context.Background(), serverEnd)
	defer clientEnd.Close()
	r := bufio.NewReader(clientEnd)

	for i, step := range ex.Exchange {
		switch {
		case step.Send != nil:
			var compact strings.Builder
			var v any
			json.Unmarshal(step.Send, &v)
			b, _ := json.Marshal(v)
			compact.Write(b)
			fmt.Fprintf(clientEnd, "Content-Length: %d\r\n\r\n%s", compact.Len(), compact.String())
		case step.Recv != nil:
			clientEnd.SetReadDeadline(time.Now().Add(15 * time.Second))
			got, err := readFrame(r)
			if err != nil {
				t.Fatalf("step %d: want %s, got read error %v", i, step.Recv, err)
			}
			var want, have any
			json.Unmarshal(step.Recv, &want)
			if err := json.Unmarshal(got, &have); err != nil {
				t.Fatalf("step %d: binary sent invalid JSON %q", i, got)
			}
			if msg := match(want, have, "$"); msg != "" {
				t.Fatalf("step %d: %s\n want %s\n  got %s", i, msg, step.Recv, got)
			}
		case step.EOF:
			clientEnd.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := readFrame(r); err == nil {
				t.Fatalf("step %d: want EOF, got %s", i, got)
			}
		}
	}
}

// readFrame reads one Content-Length framed message.
func readFrame(r *bufio.Reader) ([]byte, error) {
	length := -1
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			if length, err = strconv.Atoi(v); err != nil {
				return nil, err
			}
		}
	}
	if length < 0 {
		return nil, fmt.Errorf("no Content-Length header")
	}
	body := make([]byte, length)
	_, err := io.ReadFull(r, body)
	return body, err
}

// match reports how have differs from the pattern want: objects match when
// every key of want matches (have may have more), arrays element by element,
// "<any>" matches any value.
func match(want, have any, at string) string {
	if want == "<any>" {
		return ""
	}
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: want an object, got %v", at, have)
		}
		for k, wv := range w {
			hv, present := h[k]
			if !present {
				return fmt.Sprintf("%s.%s: missing", at, k)
			}
			if msg := match(wv, hv, at+"."+k); msg != "" {
				return msg
			}
		}
		return ""
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return fmt.Sprintf("%s: want %d elements, got %v", at, len(w), have)
		}
		for i := range w {
			if msg := match(w[i], h[i], fmt.Sprintf("%s[%d]", at, i)); msg != "" {
				return msg
			}
		}
		return ""
	}
	if !reflect.DeepEqual(want, have) {
		return fmt.Sprintf("%s: want %v, got %v", at, want, have)
	}
	return ""
}
