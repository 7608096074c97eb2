package rpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// MaxFrame is the largest frame body, in bytes, the binary reads
// (docs/protocol.md, "Framing"). File contents never travel in frames (file.put
// and file.get go by path); the largest legitimate frame is a command.run
// whose stdin_b64 carries about 12 MiB.
const MaxFrame = 16 << 20

// maxHeader bounds a frame's header, all its lines together, so that a client
// that never sends the blank line cannot make the binary buffer without end.
const maxHeader = 8 << 10

// newFrameStream is the protocol's jsonrpc2.ObjectStream on rw: the library's
// buffered stream with frameCodec, which answers the frames it refuses
// through the stream itself, so that its replies and the Conn's never
// interleave.
func newFrameStream(rw io.ReadWriteCloser, logf func(format string, args ...any)) jsonrpc2.ObjectStream {
	codec := &frameCodec{logf: logf}
	stream := jsonrpc2.NewBufferedStream(rw, codec)
	codec.reply = stream.WriteObject
	return stream
}

// frameCodec is jsonrpc2.VSCodeObjectCodec made strict (docs/protocol.md,
// "Framing"): a Content-Length over MaxFrame is refused before the body is
// read, and a body must hold exactly one JSON value, which must be a request
// whose id can be echoed as sent.
//
// jsonrpc2.Conn closes the connection on any ReadObject error, so ReadObject
// answers a bad frame itself (reply), logs it and reads on. It returns an
// error (always io.EOF, the reason logged) only when the input ends or the
// next frame cannot be found (a broken header, a length over the limit), and
// then after answering.
type frameCodec struct {
	reply func(msg any) error // writes a message to the client
	logf  func(format string, args ...any)
}

// A frameError is a frame the codec refuses. Fatal ones end the connection.
type frameError struct {
	code    int64
	kind    string
	id      json.RawMessage // the request's id as sent, or null
	message string
	fatal   bool
}

func (e *frameError) Error() string {
	if e.fatal {
		return e.message + "; closing the connection"
	}
	return e.message
}

var jsonNullID = json.RawMessage("null")

func parseError(fatal bool, format string, a ...any) *frameError {
	return &frameError{code: jsonrpc2.CodeParseError, kind: "parse_error", id: jsonNullID, message: fmt.Sprintf(format, a...), fatal: fatal}
}

func invalidRequest(id json.RawMessage, format string, a ...any) *frameError {
	return &frameError{code: jsonrpc2.CodeInvalidRequest, kind: "invalid_request", id: id, message: fmt.Sprintf(format, a...)}
}

// errorReply is a reply the Conn cannot write: its id may be null, or a
// number or string jsonrpc2.ID cannot hold.
type errorReply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   *jsonrpc2.Error `json:"error"`
}

// WriteObject implements jsonrpc2.ObjectCodec.
func (frameCodec) WriteObject(w io.Writer, obj any) error {
	data, ok := obj.(rawMessage)
	if !ok {
		var err error
		if data, err = json.Marshal(obj); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", len(data)); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// ReadObject implements jsonrpc2.ObjectCodec: it stores the next request in
// v, answering and skipping the frames it refuses on the way.
func (c *frameCodec) ReadObject(r *bufio.Reader, v any) error {
	for {
		msg, err := readMessage(r)
		if err == nil && msg == nil {
			c.logf("ignored a response: this server sends no requests")
			continue
		}
		if err == nil {
			if err = json.Unmarshal(msg, v); err == nil {
				return nil
			}
			// readMessage let through something jsonrpc2 cannot read: a bug
			// here, but one request's, not the connection's.
			err = &frameError{code: jsonrpc2.CodeInternalError, kind: "internal", id: jsonNullID,
				message: fmt.Sprintf("bug: a checked request could not be decoded: %v (please report it)", err)}
		}
		var fe *frameError
		if !errors.As(err, &fe) {
			if err != io.EOF {
				c.logf("closing the connection: %v", err)
			}
			return io.EOF // the input ended or failed: the client is gone
		}
		c.logf("refused a frame: %v", fe)
		e := &jsonrpc2.Error{Code: fe.code, Message: fe.message}
		e.SetError(ErrorData{Kind: fe.kind})
		_ = c.reply(errorReply{JSONRPC: "2.0", ID: fe.id, Error: e})
		if fe.fatal {
			// Logged above: jsonrpc2.Conn would log any error but io.EOF
			// again, and only after closing, when Serve may have returned.
			return io.EOF
		}
	}
}

// readMessage reads one frame and returns the request in it, rewritten for
// jsonrpc2 (see checkRequest), or nil for a response. Errors are *frameError, or
// the input's (io.EOF between frames).
func readMessage(r *bufio.Reader) ([]byte, error) {
	body, err := readFrameBody(r)
	if err != nil {
		return nil, err
	}
	return checkRequest(body)
}

// readFrameBody reads a header and the body it announces. It is lenient where
// that cannot lose a frame (blank lines before a header, spaces around names
// and values, the case of names, bare \n line ends, other headers) and
// refuses the rest.
func readFrameBody(r *bufio.Reader) ([]byte, error) {
	length := int64(-1)
	sawHeader := false
	budget := maxHeader
	for {
		line, err := readLine(r, budget)
		text := strings.TrimSpace(string(line))
		if err == io.EOF && !sawHeader && text == "" {
			return nil, io.EOF // between frames: the client closed its end
		}
		if err == io.EOF {
			return nil, fmt.Errorf("the input ended inside a frame header: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, err
		}
		budget -= len(line)
		if text == "" && !sawHeader {
			continue
		}
		if text == "" {
			break
		}
		sawHeader = true
		name, value, ok := strings.Cut(text, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return nil, parseError(true, "frame header line %s is not \"Name: value\"", quoteStart(text))
		}
		if !strings.EqualFold(name, "Content-Length") {
			continue
		}
		n, err := parseLength(value)
		if err != nil {
			return nil, err
		}
		if length >= 0 && n != length {
			return nil, parseError(true, "frame header has two Content-Lengths, %d and %d", length, n)
		}
		length = n
	}
	if length < 0 {
		return nil, parseError(true, "frame header has no Content-Length")
	}
	if length > MaxFrame {
		return nil, &frameError{code: jsonrpc2.CodeInvalidRequest, kind: "invalid_request", id: jsonNullID, fatal: true,
			message: fmt.Sprintf("frame of %d bytes refused: the limit is %d bytes (MaxFrame); send files with file.put, not stdin_b64", length, MaxFrame)}
	}
	body := make([]byte, length)
	if n, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("the input ended inside a frame, %d bytes into its %d: %w", n, length, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return body, nil
}

var digits = regexp.MustCompile(`^[0-9]+$`)

// parseLength reads a Content-Length value; one too large for an int64 is
// as refused as any over MaxFrame.
func parseLength(value string) (int64, error) {
	if !digits.MatchString(value) {
		return 0, parseError(true, "frame header has Content-Length %s, not a number of bytes", quoteStart(value))
	}
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return math.MaxInt64, nil
	}
	return n, nil
}

// readLine reads up to and including \n, refusing a line longer than budget.
// At the end of the input it returns what it read with io.EOF.
func readLine(r *bufio.Reader, budget int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > budget {
			return nil, parseError(true, "frame header longer than %d bytes", maxHeader)
		}
		line = append(line, chunk...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// quoteStart quotes s for a message, cut short if long.
func quoteStart(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// checkRequest checks that body is one JSON-RPC request and returns it rewritten
// with only the members jsonrpc2 needs, in the form it reads them (see
// canonicalID), so that jsonrpc2 cannot fail on it and close the connection.
// A response (result or error, no method) returns nil: this server never
// sends a request, so there is nothing it could answer.
func checkRequest(body []byte) ([]byte, error) {
	if !json.Valid(body) {
		return nil, notOneValue(body)
	}
	switch bytes.TrimLeft(body, " \t\r\n")[0] {
	case '{':
	case '[':
		return nil, invalidRequest(jsonNullID, "batches are not supported: send each request in its own frame")
	default:
		return nil, invalidRequest(jsonNullID, "a message must be a JSON object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, parseError(false, "frame is not valid JSON: %v", err)
	}
	rawID, hasID := m["id"]
	method, hasMethod := m["method"]
	if !hasMethod {
		_, result := m["result"]
		_, failure := m["error"]
		if result || failure {
			return nil, nil
		}
	}
	replyID := jsonNullID
	var id json.RawMessage
	if hasID {
		var err error
		if id, err = canonicalID(rawID); err != nil {
			if rawID[0] == '"' || rawID[0] == '-' || rawID[0] >= '0' && rawID[0] <= '9' {
				replyID = rawID // a string or number can be echoed as sent, even if refused
			}
			return nil, invalidRequest(replyID, "%v", err)
		}
		replyID = rawID
	}
	if !hasMethod {
		return nil, invalidRequest(replyID, "a request needs a \"method\" member")
	}
	if method[0] != '"' {
		return nil, invalidRequest(replyID, "\"method\" must be a string, got %s", quoteStart(string(method)))
	}
	var b bytes.Buffer
	b.Grow(len(body) + 32)
	b.WriteString(`{"jsonrpc":"2.0","method":`)
	b.Write(method)
	if hasID {
		b.WriteString(`,"id":`)
		b.Write(id)
	}
	if params, ok := m["params"]; ok {
		b.WriteString(`,"params":`)
		b.Write(params)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// notOneValue says what is wrong with a body that is not one JSON value.
func notOneValue(body []byte) *frameError {
	if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
		return parseError(false, "empty frame (%d bytes): a frame holds one JSON-RPC message", len(body))
	}
	d := json.NewDecoder(bytes.NewReader(body))
	var first json.RawMessage
	if err := d.Decode(&first); err != nil {
		return parseError(false, "frame is not valid JSON: %v", err)
	}
	return parseError(false, "frame has more after its JSON value (which ends at byte %d of %d): "+
		"one message per frame, and Content-Length must count exactly its bytes", d.InputOffset(), len(body))
}

var uintLiteral = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

// canonicalID checks a request's id and returns it as jsonrpc2 should read
// it. Ids are strings, or integers from 0 to 2^64-1 written as such (no sign,
// fraction or exponent), so that the reply's id is the same JSON text.
// jsonrpc2 reads a number as an int64 and keeps its bits as a uint64, so an
// id above 2^63-1 is handed to it as the negative int64 with the same bits.
func canonicalID(raw json.RawMessage) (json.RawMessage, error) {
	switch {
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("invalid id %s: %v", quoteStart(string(raw)), err)
		}
		// Invalid UTF-8 and lone surrogates decode to U+FFFD: the reply would
		// carry another id.
		if strings.ContainsRune(s, utf8.RuneError) {
			return nil, fmt.Errorf("id %s is not valid UTF-8 text (it holds U+FFFD or decodes to it)", quoteStart(string(raw)))
		}
		return raw, nil
	case uintLiteral.Match(raw):
		n, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("id %s is out of range: a numeric id is an integer from 0 to %d", raw, uint64(math.MaxUint64))
		}
		if n > math.MaxInt64 {
			return strconv.AppendInt(nil, int64(n), 10), nil
		}
		return raw, nil
	case string(raw) == "null":
		return nil, errors.New("id null is not allowed: a request's id is a string or an integer; a notification has no id")
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		return nil, fmt.Errorf("id %s is not allowed: a numeric id is an integer from 0 to %d, without sign, fraction or exponent", quoteStart(string(raw)), uint64(math.MaxUint64))
	}
	return nil, fmt.Errorf("id %s is not allowed: a request's id is a string or an integer", quoteStart(string(raw)))
}

// rawMessage is a message already encoded as JSON, written as it is: command
// output, which the binary encodes itself in one pass (output.go) where
// jsonrpc2's Notify would encode it and then validate and compact it twice
// more.
type rawMessage []byte
