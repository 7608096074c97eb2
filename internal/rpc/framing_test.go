package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl/orbctltest"
)

// wire is a Server spoken to byte by byte, as a client that gets the framing
// wrong would: the test writes raw bytes to its stdin and reads frames from
// its stdout. Pipes (not net.Pipe) so that a write does not wait for the
// server to read it.
type wire struct {
	t      *testing.T
	stdin  *os.File // the test's end of the server's stdin
	stdout *os.File
	r      *bufio.Reader
	logs   *syncBuffer
	served chan error // Serve's result
}

// pipeStream is the server's end: its stdin and stdout.
type pipeStream struct{ in, out *os.File }

func (p pipeStream) Read(b []byte) (int, error)  { return p.in.Read(b) }
func (p pipeStream) Write(b []byte) (int, error) { return p.out.Write(b) }
func (p pipeStream) Close() error {
	p.in.Close()
	return p.out.Close()
}

// startWire serves a Server with the fake orbctl and these machines.
func startWire(t *testing.T, machines map[string]string) *wire {
	t.Helper()
	path := orbctltest.Fake(t)
	for name, state := range machines {
		orbctltest.AddMachine(t, name, state)
	}
	env := map[string]string{orbctl.EnvOverride: path, "HOME": t.TempDir()}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{t: t, stdin: inW, stdout: outR, r: bufio.NewReader(outR), logs: &syncBuffer{}, served: make(chan error, 1)}
	srv := NewServer(Options{
		Version: "1.2.3-test",
		Getenv:  envMap(env).get,
		Logger:  log.New(w.logs, "", 0),
		Client: func(path string) *orbctl.Client {
			c := orbctl.New(path)
			c.KillDelay = 500 * time.Millisecond
			return c
		},
	})
	go func() { w.served <- srv.Serve(context.Background(), pipeStream{inR, outW}) }()
	t.Cleanup(func() {
		inW.Close()
		outR.Close()
		select {
		case <-w.served:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10s of its stdin closing")
		}
	})
	return w
}

// raw writes bytes to the server's stdin.
func (w *wire) raw(s string) {
	w.t.Helper()
	if _, err := io.WriteString(w.stdin, s); err != nil {
		w.t.Fatalf("writing to the server: %v", err)
	}
}

// send writes body as one correctly framed message.
func (w *wire) send(body string) { w.t.Helper(); w.raw(frame(body)) }

func frame(body string) string { return fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body) }

// reply is a message from the server, its id kept as the bytes it was sent as.
type reply struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int64     `json:"code"`
		Message string    `json:"message"`
		Data    ErrorData `json:"data"`
	} `json:"error"`
	raw []byte
}

func (w *wire) recv() reply {
	w.t.Helper()
	w.stdout.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := readFrame(w.r)
	if err != nil {
		w.t.Fatalf("want a message, got %v (server log:\n%s)", err, w.logs.String())
	}
	var m reply
	if err := json.Unmarshal(body, &m); err != nil {
		w.t.Fatalf("server sent invalid JSON %q", body)
	}
	m.raw = body
	return m
}

// recvReply skips notifications.
func (w *wire) recvReply() reply {
	w.t.Helper()
	for {
		if m := w.recv(); m.Method == "" {
			return m
		}
	}
}

// wantEOF checks that the server closes its stdout without sending more.
func (w *wire) wantEOF() {
	w.t.Helper()
	w.stdout.SetReadDeadline(time.Now().Add(10 * time.Second))
	if body, err := readFrame(w.r); err == nil {
		w.t.Fatalf("want the connection closed, got %s", body)
	} else if !errors.Is(err, io.EOF) {
		w.t.Fatalf("want the connection closed, got %v", err)
	}
}

// wantServed checks that Serve returned (the binary exits 0 then).
func (w *wire) wantServed(within time.Duration) {
	w.t.Helper()
	select {
	case err := <-w.served:
		if err != nil {
			w.t.Fatalf("Serve returned %v", err)
		}
		w.served <- nil // for the cleanup
	case <-time.After(within):
		w.t.Fatalf("still serving %s later", within)
	}
}

// wantError checks that m is an error reply with this code and kind, to the
// id written as the JSON text id ("null" for none).
func (m reply) wantError(t *testing.T, id string, code int64, kind string) {
	t.Helper()
	if m.Error == nil {
		t.Fatalf("got %s, want error %d (%s)", m.raw, code, kind)
	}
	if m.Error.Code != code || m.Error.Data.Kind != kind || string(m.ID) != id {
		t.Fatalf("got %s, want error %d (%s) to id %s", m.raw, code, kind, id)
	}
}

// initialize is a valid request with this JSON id.
func initialize(id string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"initialize","params":{"protocol_version":` + strconv.Itoa(ProtocolVersion) + `}}`
}

// wantAlive checks that the connection still answers.
func (w *wire) wantAlive(id string) {
	w.t.Helper()
	w.send(initialize(id))
	if m := w.recvReply(); m.Error != nil || string(m.ID) != id {
		w.t.Fatalf("after the bad frame, a good request got %s", m.raw)
	}
}

func TestAFrameOverTheLimitIsRefusedBeforeItsBodyIsRead(t *testing.T) {
	for _, length := range []string{"4294967295", fmt.Sprint(MaxFrame + 1), "99999999999999999999999"} {
		t.Run(length, func(t *testing.T) {
			w := startWire(t, nil)
			// The body never comes: the server must answer from the header alone.
			w.raw("Content-Length: " + length + "\r\n\r\n{")
			m := w.recv()
			m.wantError(t, "null", -32600, "invalid_request")
			if !strings.Contains(m.Error.Message, fmt.Sprint(MaxFrame)) {
				t.Fatalf("message %q does not state the limit", m.Error.Message)
			}
			w.wantEOF()
			w.wantServed(5 * time.Second)
			if !strings.Contains(w.logs.String(), "refused") {
				t.Fatalf("no reason logged:\n%s", w.logs.String())
			}
		})
	}
}

func TestAFrameOfExactlyTheLimitIsRead(t *testing.T) {
	w := startWire(t, nil)
	body := initialize("1")
	w.send(body + strings.Repeat(" ", MaxFrame-len(body)))
	if m := w.recvReply(); m.Error != nil || string(m.ID) != "1" {
		t.Fatalf("got %s", m.raw)
	}
}

func TestAFrameDeclaringMoreBytesThanItsJSONDoesNotSwallowTheNext(t *testing.T) {
	w := startWire(t, nil)
	first, second := initialize("1"), frame(initialize("2"))
	// The first frame's length covers the second frame too.
	w.raw(fmt.Sprintf("Content-Length: %d\r\n\r\n%s%s", len(first)+len(second), first, second))
	m := w.recv()
	m.wantError(t, "null", -32700, "parse_error")
	if !strings.Contains(m.Error.Message, "Content-Length") {
		t.Fatalf("message %q does not point at Content-Length", m.Error.Message)
	}
	w.wantAlive("3")
}

func TestTwoMessagesInOneFrameAreRefused(t *testing.T) {
	w := startWire(t, nil)
	for _, sep := range []string{"", "\n", " \r\n "} {
		w.send(initialize("1") + sep + initialize("2"))
		w.recv().wantError(t, "null", -32700, "parse_error")
	}
	w.wantAlive("3")
}

func TestHeaderWhitespaceCaseAndOtherHeadersAreTolerated(t *testing.T) {
	w := startWire(t, nil)
	for i, header := range []string{
		"Content-Length: %d   \r\n\r\n",
		"Content-Length: %d\t\r\n \r\n",
		"content-length:%d\r\n\r\n",
		"CONTENT-LENGTH :\t%d\r\n\r\n",
		"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n",
		"Content-Length: %d\r\nX-Anything:\r\n\r\n",
		"Content-Length: %d\n\n", // bare newlines, as a hand-typed frame has
		"\r\nContent-Length: %d\r\n\r\n",
	} {
		id := fmt.Sprint(i + 1)
		body := initialize(id)
		w.raw(fmt.Sprintf(header, len(body)) + body)
		if m := w.recvReply(); m.Error != nil || string(m.ID) != id {
			t.Fatalf("header %q: got %s", header, m.raw)
		}
	}
}

func TestABrokenHeaderIsAnsweredThenTheConnectionCloses(t *testing.T) {
	for name, header := range map[string]string{
		"negative length":     "Content-Length: -5\r\n\r\n",
		"length not a number": "Content-Length: 12abc\r\n\r\n",
		"empty length":        "Content-Length:\r\n\r\n",
		"no length":           "Content-Type: application/json\r\n\r\n",
		"not a header":        "{\"jsonrpc\":\"2.0\"}\r\n\r\n",
		"two lengths":         "Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"header too long":     "X-Padding: " + strings.Repeat("x", 64<<10) + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			w := startWire(t, nil)
			// The server may close before it has read it all (the long one).
			go io.WriteString(w.stdin, header)
			m := w.recv()
			m.wantError(t, "null", -32700, "parse_error")
			w.wantEOF()
			w.wantServed(5 * time.Second)
			if !strings.Contains(w.logs.String(), "closing the connection") {
				t.Fatalf("no reason logged:\n%s", w.logs.String())
			}
		})
	}
}

func TestABadMessageInAGoodFrameIsAnsweredAndTheConnectionStays(t *testing.T) {
	w := startWire(t, nil)
	for i, tc := range []struct {
		body string
		id   string // the JSON text of the reply's id
		code int64
		kind string
	}{
		{"", "null", -32700, "parse_error"},
		{"  \r\n", "null", -32700, "parse_error"},
		{`{"jsonrpc":"2.0","id":1,`, "null", -32700, "parse_error"},
		{`{"jsonrpc":"2.0","id":1,"method":"initialize"}x`, "null", -32700, "parse_error"},
		{`[]`, "null", -32600, "invalid_request"},
		{`[` + initialize("1") + `]`, "null", -32600, "invalid_request"},
		{`42`, "null", -32600, "invalid_request"},
		{`"initialize"`, "null", -32600, "invalid_request"},
		{`{"jsonrpc":"2.0","id":7}`, "7", -32600, "invalid_request"},
		{`{"jsonrpc":"2.0","id":7,"method":5}`, "7", -32600, "invalid_request"},
		{`{"jsonrpc":"2.0","id":7,"Method":"initialize"}`, "7", -32600, "invalid_request"},
		{initialize("-3"), "-3", -32600, "invalid_request"},
		{initialize("-0"), "-0", -32600, "invalid_request"},
		{initialize("1.5"), "1.5", -32600, "invalid_request"},
		{initialize("1.0"), "1.0", -32600, "invalid_request"},
		{initialize("1e2"), "1e2", -32600, "invalid_request"},
		{initialize("18446744073709551616"), "18446744073709551616", -32600, "invalid_request"},
		{initialize(`"\ud800"`), `"\ud800"`, -32600, "invalid_request"},
		{initialize("true"), "null", -32600, "invalid_request"},
		{initialize(`{"n":1}`), "null", -32600, "invalid_request"},
		{initialize("null"), "null", -32600, "invalid_request"},
		// Not a request: a response, which this server never asked for, is
		// ignored (logged); the next request's reply shows it was skipped.
		{`{"jsonrpc":"2.0","id":9,"result":null}`, "", 0, ""},
	} {
		w.send(tc.body)
		if tc.code != 0 {
			w.recv().wantError(t, tc.id, tc.code, tc.kind)
		}
		w.wantAlive(fmt.Sprint(100 + i))
	}
}

func TestIdsAreEchoedAsSent(t *testing.T) {
	w := startWire(t, nil)
	for _, id := range []string{
		"0", "1", "9223372036854775807", "9223372036854775808", "18446744073709551615",
		`"abc"`, `""`, `"<&>"`, `"h\u00e9llo"`, `"\ud83d\ude00"`, `"12"`,
	} {
		w.send(initialize(id))
		m := w.recvReply()
		if m.Error != nil || !sameJSON(t, m.ID, json.RawMessage(id)) {
			t.Errorf("sent id %s, got %s", id, m.raw)
		}
		// An error reply from a handler echoes it too.
		w.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"machine.explode"}`)
		if m := w.recvReply(); m.Error == nil || !sameJSON(t, m.ID, json.RawMessage(id)) {
			t.Errorf("sent id %s to an unknown method, got %s", id, m.raw)
		}
	}
}

// sameJSON compares two JSON values, numbers by their digits.
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	decode := func(raw json.RawMessage) any {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		return v
	}
	return fmt.Sprintf("%#v", decode(a)) == fmt.Sprintf("%#v", decode(b))
}

func TestCancelRequestFindsLargeAndStringIds(t *testing.T) {
	w := startWire(t, map[string]string{"web": "running"})
	for _, id := range []string{"18446744073709551615", `"job-7"`} {
		w.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"command.run","params":{"machine":"web","command":"echo started; sleep 30"}}`)
		if m := w.recv(); m.Method != NotifyCommandOutput || !strings.Contains(string(m.raw), `"request_id":`+id) {
			t.Fatalf("first message %s, want the command's output for request %s", m.raw, id)
		}
		w.send(`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":` + id + `}}`)
		w.recvReply().wantError(t, id, CodeCancelled, "cancelled")
	}
}

// EOF on stdin means the client is gone: what it had in flight is cancelled,
// their commands stopped, nothing more is written, and Serve returns.
func TestEOFWhileACommandRunsStopsItAndEndsServe(t *testing.T) {
	w := startWire(t, map[string]string{"web": "running"})
	marker := filepath.Join(t.TempDir(), "survived")
	w.send(`{"jsonrpc":"2.0","id":1,"method":"command.run","params":{"machine":"web","command":"echo started; sleep 2; touch ` + marker + `"}}`)
	if m := w.recv(); m.Method != NotifyCommandOutput {
		t.Fatalf("first message %s", m.raw)
	}
	start := time.Now()
	w.stdin.Close()
	w.wantEOF()
	w.wantServed(5 * time.Second)
	t.Logf("Serve returned %s after EOF", time.Since(start).Round(time.Millisecond))
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command kept running after EOF")
	}
}

func TestEOFInsideAFrameIsLogged(t *testing.T) {
	w := startWire(t, nil)
	w.raw("Content-Length: 100\r\n\r\n{\"jsonrpc\"")
	w.stdin.Close()
	w.wantEOF()
	w.wantServed(5 * time.Second)
	if !strings.Contains(w.logs.String(), "inside a frame") {
		t.Fatalf("a cut frame was not logged:\n%s", w.logs.String())
	}
}
