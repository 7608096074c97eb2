package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"math/big"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// Seed corpora: testdata/fuzz/<FuzzName>/. `make fuzz` runs each target
// longer; `make test` briefly.

// memStream is a connection whose input is fixed bytes and whose output is
// kept.
type memStream struct {
	in  *bytes.Reader
	mu  sync.Mutex
	out bytes.Buffer
}

func (m *memStream) Read(p []byte) (int, error) { return m.in.Read(p) }
func (m *memStream) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.Write(p)
}
func (m *memStream) Close() error { return nil }

// delivered records what a jsonrpc2.Conn hands to its handler, and answers
// requests with "ok" when answer is set.
type delivered struct {
	answer   bool
	requests []*jsonrpc2.Request
}

func (d *delivered) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	d.requests = append(d.requests, req)
	if d.answer && !req.Notif {
		_ = conn.Reply(ctx, req.ID, "ok")
	}
}

// converse reads input through the server's stream and codec into a real
// jsonrpc2.Conn until the Conn closes, and returns what it delivered, the
// messages written back and the log.
func converse(t *testing.T, input []byte, answer bool) (requests []*jsonrpc2.Request, replies []wireReply, logs string) {
	t.Helper()
	stream := &memStream{in: bytes.NewReader(input)}
	var logBuf syncBuffer
	logger := log.New(&logBuf, "", 0)
	h := &delivered{answer: answer}
	conn := jsonrpc2.NewConn(context.Background(), newFrameStream(stream, logger.Printf), h, jsonrpc2.SetLogger(logger))
	select {
	case <-conn.DisconnectNotify():
	case <-time.After(10 * time.Second):
		t.Fatalf("the connection is still open 10s after its input ended (%d bytes left unread)", stream.in.Len())
	}
	logs = logBuf.String()
	if strings.Contains(logs, "bug:") || strings.Contains(logs, "jsonrpc2:") {
		t.Fatalf("log:\n%s", logs)
	}
	// The Conn stops reading only at the end of the input or a frame it
	// cannot read past, which it says.
	if stream.in.Len() > 0 && !strings.Contains(logs, "closing the connection") {
		t.Fatalf("stopped with %d bytes unread and no reason logged:\n%s", stream.in.Len(), logs)
	}
	r := bufio.NewReader(bytes.NewReader(stream.out.Bytes()))
	for {
		body, err := readFrame(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("unreadable output %q: %v", stream.out.Bytes(), err)
		}
		var m wireReply
		if err := json.Unmarshal(body, &m); err != nil || m.JSONRPC != "2.0" || m.ID == nil {
			t.Fatalf("invalid reply %s (%v)", body, err)
		}
		m.raw = body
		replies = append(replies, m)
	}
	return h.requests, replies, logs
}

type wireReply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int64     `json:"code"`
		Message string    `json:"message"`
		Data    ErrorData `json:"data"`
	} `json:"error"`
	raw []byte
}

// checkRefusal checks a reply the codec wrote for a frame it refused.
func checkRefusal(t *testing.T, m wireReply) {
	t.Helper()
	if m.Error == nil || m.Error.Message == "" {
		t.Fatalf("refusal without an error: %s", m.raw)
	}
	switch {
	case m.Error.Code == jsonrpc2.CodeParseError && m.Error.Data.Kind == "parse_error" && string(m.ID) == "null":
	case m.Error.Code == jsonrpc2.CodeInvalidRequest && m.Error.Data.Kind == "invalid_request":
	default:
		t.Fatalf("refusal %s: want -32700 parse_error (id null) or -32600 invalid_request", m.raw)
	}
}

// FuzzFrameDecoder feeds arbitrary bytes to the codec: it must not panic or
// hang, must not let jsonrpc2 close the connection on something it let
// through, and must answer every frame it refuses.
func FuzzFrameDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, input []byte) {
		requests, replies, _ := converse(t, input, false)
		for _, m := range replies {
			checkRefusal(t, m)
		}
		for _, req := range requests {
			if req.Notif {
				continue
			}
			if id, _ := json.Marshal(req.ID); !validID(id) {
				t.Fatalf("delivered a request with id %s", id)
			}
		}
	})
}

// FuzzMessage frames an arbitrary body correctly and checks the codec's
// verdict against the protocol's rules, written out again here: a request is
// delivered with its method and params intact and its reply carries the id as
// sent; a response is ignored; anything else is refused with the id as sent
// (null when it has none, or none that is a string or number).
func FuzzMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		input := fmt.Appendf(nil, "Content-Length: %d\r\n\r\n%s", len(body), body)
		requests, replies, _ := converse(t, input, true)
		verdict, replyID := judge(body)
		switch verdict {
		case "ignore":
			if len(requests) != 0 || len(replies) != 0 {
				t.Fatalf("a response was not ignored: %d requests, %d replies", len(requests), len(replies))
			}
		case "refuse":
			if len(requests) != 0 || len(replies) != 1 {
				t.Fatalf("want a refusal, got %d requests, %d replies", len(requests), len(replies))
			}
			checkRefusal(t, replies[0])
			if !sameJSON(t, replies[0].ID, replyID) {
				t.Fatalf("refusal %s, want id %s", replies[0].raw, replyID)
			}
		case "deliver":
			if len(requests) != 1 {
				t.Fatalf("a valid request was not delivered: %d requests, replies %v", len(requests), replies)
			}
			var raw map[string]json.RawMessage
			json.Unmarshal(body, &raw)
			var method string
			json.Unmarshal(raw["method"], &method)
			req := requests[0]
			if req.Method != method {
				t.Fatalf("method %q, want %q", req.Method, method)
			}
			params, hasParams := raw["params"]
			if hasParams != (req.Params != nil) || hasParams && !sameJSON(t, *req.Params, params) {
				t.Fatalf("params %v, want %s", req.Params, params)
			}
			id, hasID := raw["id"]
			if req.Notif == hasID {
				t.Fatalf("notification %v, but the body has an id: %v", req.Notif, hasID)
			}
			if hasID && (len(replies) != 1 || replies[0].Error != nil || !sameJSON(t, replies[0].ID, id)) {
				t.Fatalf("sent id %s, replies %v", id, replies)
			}
		}
	})
}

// judge says what the protocol does with one frame's body, and the id of
// the refusal.
func judge(body []byte) (verdict string, replyID json.RawMessage) {
	null := json.RawMessage("null")
	if !json.Valid(body) {
		return "refuse", null
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(body, &raw) != nil || raw == nil {
		return "refuse", null // not an object
	}
	method, hasMethod := raw["method"]
	_, result := raw["result"]
	_, failure := raw["error"]
	if !hasMethod && (result || failure) {
		return "ignore", nil
	}
	id, hasID := raw["id"]
	replyID = null
	if hasID && (id[0] == '"' || id[0] == '-' || id[0] >= '0' && id[0] <= '9') {
		replyID = id
	}
	if hasID && !validID(id) || !hasMethod || method[0] != '"' {
		return "refuse", replyID
	}
	return "deliver", nil
}

// validID: a string that decodes without U+FFFD, or an integer from 0 to
// 2^64-1 written with digits only.
func validID(id json.RawMessage) bool {
	if id[0] == '"' {
		var s string
		return json.Unmarshal(id, &s) == nil && !strings.ContainsRune(s, utf8.RuneError)
	}
	if !regexp.MustCompile(`^(0|[1-9][0-9]*)$`).Match(id) {
		return false
	}
	n, _ := new(big.Int).SetString(string(id), 10)
	return n.Cmp(new(big.Int).SetUint64(math.MaxUint64)) <= 0
}

// paramsServer is a Server whose orbctl cannot be found: a request that
// passes every check of its params ends in orbctl_not_found instead of
// running orbctl.
func paramsServer() *Server {
	return NewServer(Options{
		Getenv: envMap{orbctl.EnvOverride: "/nonexistent/orbctl", EnvSessions: "0"}.get,
		Logger: log.New(io.Discard, "", 0),
	})
}

// fuzzParams sends arbitrary params, as the wire delivers them, through the
// server's dispatch (decode and every check before orbctl) and hands check
// the decoded request and the outcome. Panics fail the target.
func fuzzParams(f *testing.F, method string, check func(t *testing.T, req *jsonrpc2.Request, result any, err *jsonrpc2.Error)) {
	f.Fuzz(func(t *testing.T, params []byte) {
		body := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":1,"method":%q,"params":%s}`, method, params)
		msg, err := checkRequest(body)
		if err != nil {
			return // params that are not one JSON value never reach dispatch
		}
		var req jsonrpc2.Request
		if err := json.Unmarshal(msg, &req); err != nil {
			t.Fatalf("jsonrpc2 cannot read %s: %v", msg, err)
		}
		s := paramsServer()
		result, derr := s.dispatch(context.Background(), nil, &req)
		var rpcErr *jsonrpc2.Error
		if derr != nil {
			rpcErr = s.describe(context.Background(), derr) // as the client gets it
		}
		if rpcErr != nil && rpcErr.Code == jsonrpc2.CodeInvalidParams {
			if d := errorData(t, rpcErr); d.Kind != "invalid_params" {
				t.Fatalf("-32602 of kind %q", d.Kind)
			}
		}
		check(t, &req, result, rpcErr)
	})
}

// wantCode fails unless err has one of the codes (0 = success).
func wantCode(t *testing.T, err *jsonrpc2.Error, codes ...int64) {
	t.Helper()
	code := int64(0)
	if err != nil {
		code = err.Code
	}
	for _, c := range codes {
		if c == code {
			return
		}
	}
	t.Fatalf("outcome %d (%v), want one of %v", code, err, codes)
}

// passed decodes params as the handler did when they got past every check
// (orbctl was looked for).
func passed(t *testing.T, req *jsonrpc2.Request, err *jsonrpc2.Error, p any) bool {
	t.Helper()
	if err == nil || err.Code != CodeOrbctlNotFound {
		return false
	}
	if err := decode(req, p); err != nil {
		t.Fatalf("checks passed params that do not decode: %v", err)
	}
	return true
}

func checkTimeoutPassed(t *testing.T, timeout float64) {
	t.Helper()
	if !(timeout >= 0 && timeout <= 7*24*3600) {
		t.Fatalf("timeout %g got past the checks", timeout)
	}
}

var envNameRule = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func FuzzInitializeParams(f *testing.F) {
	fuzzParams(f, MethodInitialize, func(t *testing.T, req *jsonrpc2.Request, result any, err *jsonrpc2.Error) {
		wantCode(t, err, 0, jsonrpc2.CodeInvalidParams, CodeProtocolMismatch)
		if err == nil {
			var p struct {
				ProtocolVersion json.Number `json:"protocol_version"`
			}
			json.Unmarshal(*req.Params, &p)
			if res, ok := result.(InitializeResult); !ok || p.ProtocolVersion.String() != strconv.Itoa(ProtocolVersion) || res.ProtocolVersion != ProtocolVersion {
				t.Fatalf("initialize with %s succeeded: %+v", *req.Params, result)
			}
		}
	})
}

func FuzzMachinesListParams(f *testing.F) {
	fuzzParams(f, MethodMachinesList, func(t *testing.T, _ *jsonrpc2.Request, _ any, err *jsonrpc2.Error) {
		wantCode(t, err, CodeOrbctlNotFound) // it takes no params
	})
}

func FuzzMachineConnectParams(f *testing.F) {
	fuzzParams(f, MethodMachineConnect, func(t *testing.T, req *jsonrpc2.Request, _ any, err *jsonrpc2.Error) {
		wantCode(t, err, jsonrpc2.CodeInvalidParams, CodeOrbctlNotFound)
		var p MachineConnectParams
		if passed(t, req, err, &p) {
			checkTimeoutPassed(t, p.Timeout)
			if p.Machine == "" {
				t.Fatal("no machine got past the checks")
			}
		}
	})
}

func FuzzCommandRunParams(f *testing.F) {
	fuzzParams(f, MethodCommandRun, func(t *testing.T, req *jsonrpc2.Request, _ any, err *jsonrpc2.Error) {
		wantCode(t, err, jsonrpc2.CodeInvalidParams, CodeOrbctlNotFound)
		var p CommandRunParams
		if passed(t, req, err, &p) {
			checkTimeoutPassed(t, p.Timeout)
			if p.Machine == "" || p.Command == "" {
				t.Fatalf("machine %q, command %q got past the checks", p.Machine, p.Command)
			}
			for k := range p.Env {
				if !envNameRule.MatchString(k) {
					t.Fatalf("env name %q got past the checks", k)
				}
			}
			if _, err := base64.StdEncoding.DecodeString(p.StdinB64); err != nil {
				t.Fatalf("stdin_b64 %q got past the checks", p.StdinB64)
			}
		}
	})
}

func checkFileParams(t *testing.T, machine, local, remote string) {
	t.Helper()
	if machine == "" || !filepath.IsAbs(local) || remote == "" || remote == "--" {
		t.Fatalf("machine %q, local_path %q, remote_path %q got past the checks", machine, local, remote)
	}
}

func FuzzFilePutParams(f *testing.F) {
	fuzzParams(f, MethodFilePut, func(t *testing.T, req *jsonrpc2.Request, _ any, err *jsonrpc2.Error) {
		wantCode(t, err, jsonrpc2.CodeInvalidParams, CodeOrbctlNotFound)
		var p FilePutParams
		if passed(t, req, err, &p) {
			checkFileParams(t, p.Machine, p.LocalPath, p.RemotePath)
			checkEscalationParams(t, p.Escalation)
		}
	})
}

func checkEscalationParams(t *testing.T, e *Escalation) {
	t.Helper()
	if e != nil && (checkEscalation(e) != nil) {
		t.Fatalf("escalation %+v got past the checks", *e)
	}
}

func FuzzFileGetParams(f *testing.F) {
	fuzzParams(f, MethodFileGet, func(t *testing.T, req *jsonrpc2.Request, _ any, err *jsonrpc2.Error) {
		wantCode(t, err, jsonrpc2.CodeInvalidParams, CodeOrbctlNotFound)
		var p FileGetParams
		if passed(t, req, err, &p) {
			checkFileParams(t, p.Machine, p.LocalPath, p.RemotePath)
			checkEscalationParams(t, p.Escalation)
		}
	})
}

func FuzzShutdownParams(f *testing.F) {
	fuzzParams(f, MethodShutdown, func(t *testing.T, _ *jsonrpc2.Request, result any, err *jsonrpc2.Error) {
		if err != nil || result != nil {
			t.Fatalf("shutdown: %v %v, want null", result, err) // it takes no params
		}
	})
}

// FuzzCancelRequestParams sends $/cancelRequest with arbitrary params to a
// server with requests 7 and "7" in flight: at most one is cancelled, and
// {"id": 7} or {"id": "7"} cancels that one.
func FuzzCancelRequestParams(f *testing.F) {
	f.Fuzz(func(t *testing.T, params []byte) {
		body := fmt.Appendf(nil, `{"jsonrpc":"2.0","method":%q,"params":%s}`, NotifyCancelRequest, params)
		msg, err := checkRequest(body)
		if err != nil {
			return
		}
		var req jsonrpc2.Request
		if err := json.Unmarshal(msg, &req); err != nil {
			t.Fatalf("jsonrpc2 cannot read %s: %v", msg, err)
		}
		s := paramsServer()
		cancelled := map[jsonrpc2.ID]bool{}
		for _, id := range []jsonrpc2.ID{{Num: 7}, {Str: "7", IsString: true}} {
			s.inflight[id] = &request{cancel: func(error) { cancelled[id] = true }, done: make(chan struct{})}
		}
		s.handleNotification(&req)
		if len(cancelled) > 1 {
			t.Fatalf("%s cancelled %v", params, cancelled)
		}
		var p map[string]json.RawMessage
		json.Unmarshal(params, &p)
		if id, ok := p["id"]; ok && len(p) == 1 {
			if string(id) == "7" && !cancelled[jsonrpc2.ID{Num: 7}] || string(id) == `"7"` && !cancelled[jsonrpc2.ID{Str: "7", IsString: true}] {
				t.Fatalf("%s did not cancel its request: %v", params, cancelled)
			}
		}
		if reflect.DeepEqual(params, []byte("null")) && len(cancelled) != 0 {
			t.Fatal("null params cancelled a request")
		}
	})
}
