package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sourcegraph/jsonrpc2"
)

// The transfer subcommand (`pyinfra-orbstack transfer`, hidden) is the remote
// half of file.put and file.get when the client's files are on another Mac: a
// relay (`serve --mac`, internal/remote) runs it in an ssh session of its own
// per transfer, and it runs the same code as file.put and file.get
// (files.go) with the bytes on its stdin or stdout instead of a local file
// (docs/protocol.md, "Relay mode").
//
// Wire format, stdin:
//
//	{"method": "file.put", "params": {"machine": …, "user": …, "remote_path": …, "escalation": …, "size": N}}\n
//	N raw bytes (put only)
//
// The header is one line of at most MaxTransferHeader bytes. After it (and
// after the N bytes of a put) stdin stays open until the answer has been
// read: stdin ending early means the client is gone, and the transfer stops
// (a put cut short leaves the destination as it was).
//
// Stdout: for a get, the file's bytes as chunks, each a 4-byte big-endian
// length (1 to MaxTransferChunk) then that many bytes, ended by a zero-length
// chunk; then, for both, one line: {"result": {"size": N}} or {"error":
// {"code", "message", "data"}}, the error as file.put/file.get would give it.
// A refused header is answered by that line alone (its first byte "{" is
// never the first byte of a chunk's length).

// MaxTransferHeader bounds the transfer header line, newline included: an
// escalation command is the largest thing in it.
const MaxTransferHeader = 1 << 20

// MaxTransferChunk is the largest chunk of a get's bytes on the wire.
const MaxTransferChunk = 1 << 20

// TransferHeader is the transfer subcommand's first line.
type TransferHeader struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// TransferParams is the header's params: file.put's or file.get's without
// local_path (which is on the client's Mac), plus a put's size.
type TransferParams struct {
	Machine    string      `json:"machine"`
	User       string      `json:"user"`
	RemotePath string      `json:"remote_path"`
	Escalation *Escalation `json:"escalation,omitempty"`
	Size       *int64      `json:"size,omitempty"`
}

// TransferAnswer is the transfer subcommand's last line.
type TransferAnswer struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *jsonrpc2.Error `json:"error,omitempty"`
}

// errClientGone is the cause of a transfer whose client closed stdin early.
var errClientGone = errors.New("the client closed the transfer's stdin")

// ParseTransferHeader reads and checks the header line from r.
func ParseTransferHeader(r *bufio.Reader) (TransferHeader, TransferParams, error) {
	var h TransferHeader
	var p TransferParams
	line, err := readLine(r, MaxTransferHeader)
	if err != nil {
		var fe *frameError
		if errors.As(err, &fe) {
			return h, p, invalidParams("", "transfer header refused: longer than %d bytes", MaxTransferHeader)
		}
		if err == io.EOF && len(line) > 0 {
			return h, p, invalidParams("", "transfer header refused: the input ended before its newline")
		}
		if err == io.EOF {
			return h, p, invalidParams("", "transfer header refused: the input was empty")
		}
		return h, p, ioError("", fmt.Sprintf("cannot read the transfer header: %v", err))
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return h, p, invalidParams("", "transfer header refused: not a JSON object: %v", err)
	}
	if h.Method != MethodFilePut && h.Method != MethodFileGet {
		return h, p, invalidParams("method", "transfer header refused: method must be %q or %q, got %q", MethodFilePut, MethodFileGet, h.Method)
	}
	if len(h.Params) == 0 || json.Unmarshal(h.Params, &p) != nil || bytes.Equal(h.Params, []byte("null")) {
		return h, p, invalidParams("params", "transfer header refused: params must be an object of %s's params without local_path", h.Method)
	}
	if err := checkTransfer(h.Method, p.Machine, p.RemotePath, p.Escalation); err != nil {
		return h, p, err
	}
	if h.Method == MethodFilePut && (p.Size == nil || *p.Size < 0) {
		return h, p, invalidParams("size", "transfer header refused: file.put needs size, the number of bytes that follow")
	}
	return h, p, nil
}

// Transfer serves one transfer subcommand: the header and a put's bytes
// from in, a get's chunks and the answer line to out. It returns an error
// only when the answer could not be written.
func (s *Server) Transfer(ctx context.Context, in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, 256<<10)
	bw := bufio.NewWriterSize(out, MaxTransferChunk+4)
	h, p, err := ParseTransferHeader(br)
	if err != nil {
		return writeAnswer(bw, nil, toRPCError(ctx, err))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Once the request is read, stdin ending means the client is gone.
	var watch sync.Once
	gone := func() {
		watch.Do(func() {
			go func() {
				io.Copy(io.Discard, br)
				cancel(errClientGone)
			}()
		})
	}
	c, err := s.client()
	if err != nil {
		if h.Method == MethodFileGet {
			writeChunkEnd(bw)
		}
		return writeAnswer(bw, nil, s.describe(ctx, err))
	}
	var result any
	if h.Method == MethodFilePut {
		size := *p.Size
		body := &countedReader{r: io.LimitReader(br, size), left: size, done: gone}
		if size == 0 {
			gone()
		}
		result, err = s.put(ctx, c, FilePutParams{Machine: p.Machine, User: p.User, RemotePath: p.RemotePath, Escalation: p.Escalation}, body, size)
	} else {
		gone()
		cw := &chunkWriter{w: bw}
		err = s.get(ctx, c, FileGetParams{Machine: p.Machine, User: p.User, RemotePath: p.RemotePath, Escalation: p.Escalation}, cw)
		if err == nil && cw.err != nil {
			err = ioError(p.Machine, fmt.Sprintf("cannot send the file: %v", cw.err))
		}
		result = FileResult{Size: cw.n}
		if cw.err == nil {
			writeChunkEnd(bw)
		}
	}
	if err != nil {
		return writeAnswer(bw, nil, s.describe(ctx, err))
	}
	return writeAnswer(bw, result, nil)
}

func writeAnswer(w *bufio.Writer, result any, e *jsonrpc2.Error) error {
	a := TransferAnswer{Error: e}
	if e == nil {
		raw, err := json.Marshal(result)
		if err != nil {
			return err
		}
		a.Result = raw
	}
	line, err := json.Marshal(a)
	if err != nil {
		return err
	}
	w.Write(append(line, '\n'))
	return w.Flush()
}

// countedReader calls done once its left bytes have been read. (Input that
// ends early is the put script's to report: "cut short".)
type countedReader struct {
	r    io.Reader
	left int64
	done func()
}

func (c *countedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left <= 0 {
		c.done()
	}
	return n, err
}

// chunkWriter writes a get's bytes as length-prefixed chunks.
type chunkWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	written := 0
	for len(p) > 0 {
		n := min(len(p), MaxTransferChunk)
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], uint32(n))
		c.w.Write(hdr[:])
		if _, err := c.w.Write(p[:n]); err != nil {
			c.err = err
			return written, err
		}
		written += n
		c.n += int64(n)
		p = p[n:]
	}
	return written, nil
}

func writeChunkEnd(w *bufio.Writer) { w.Write([]byte{0, 0, 0, 0}) }

// ReadTransferAnswer reads a transfer's answer from r, after copying a get's
// chunks to out (nil for a put). It returns the raw result, or the error as
// the transfer gave it.
func ReadTransferAnswer(r *bufio.Reader, out io.Writer) (json.RawMessage, *jsonrpc2.Error, error) {
	if out != nil {
		for {
			first, err := r.Peek(1)
			if err != nil {
				return nil, nil, err
			}
			if first[0] == '{' { // a refused header: the answer alone
				break
			}
			var hdr [4]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return nil, nil, err
			}
			n := binary.BigEndian.Uint32(hdr[:])
			if n == 0 {
				break
			}
			if n > MaxTransferChunk {
				return nil, nil, fmt.Errorf("the transfer sent a chunk of %d bytes, over the limit of %d: not a pyinfra-orbstack transfer", n, MaxTransferChunk)
			}
			if _, err := io.CopyN(out, r, int64(n)); err != nil {
				return nil, nil, err
			}
		}
	}
	line, err := readLine(r, MaxTransferHeader)
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return nil, nil, io.EOF
		}
		return nil, nil, fmt.Errorf("the transfer's answer was cut short or too long: %v", err)
	}
	var a TransferAnswer
	if err := json.Unmarshal(line, &a); err != nil || a.Error == nil && a.Result == nil {
		return nil, nil, fmt.Errorf("the transfer's answer is not one: %s", quoteStart(string(line)))
	}
	return a.Result, a.Error, nil
}

// ReadFrame reads one frame's body (docs/protocol.md, "Framing"). An error
// is the input's (io.EOF between frames) or a frame that cannot be read past;
// RefusalFrame gives the latter's answer.
func ReadFrame(r *bufio.Reader) ([]byte, error) { return readFrameBody(r) }

// RefusalFrame is the reply body to a frame ReadFrame refused, or nil when
// err is not such a refusal.
func RefusalFrame(err error) []byte {
	var fe *frameError
	if !errors.As(err, &fe) {
		return nil
	}
	e := &jsonrpc2.Error{Code: fe.code, Message: fe.message}
	e.SetError(ErrorData{Kind: fe.kind})
	body, _ := json.Marshal(errorReply{JSONRPC: "2.0", ID: fe.id, Error: e})
	return body
}

// WriteFrame writes body as one frame (callers serialise their writes).
func WriteFrame(w io.Writer, body []byte) error {
	if len(body) > 64<<10 { // not worth a copy
		if _, err := fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", len(body)); err != nil {
			return err
		}
		_, err := w.Write(body)
		return err
	}
	buf := make([]byte, 0, len(body)+32)
	buf = fmt.Appendf(buf, "Content-Length: %d\r\n\r\n", len(body))
	buf = append(buf, body...)
	_, err := w.Write(buf)
	return err
}

// ErrorReply is the body of an error reply to a request whose id is raw (as
// sent).
func ErrorReply(rawID json.RawMessage, e *jsonrpc2.Error) []byte {
	body, _ := json.Marshal(errorReply{JSONRPC: "2.0", ID: rawID, Error: e})
	return body
}
