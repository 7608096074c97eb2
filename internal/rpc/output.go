package rpc

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// Output batching (docs/protocol.md, "command.output"): a command's stdout and
// stderr go out as runs of raw text, in the order the binary read them, many
// lines per notification. A notification leaves when flushSize bytes wait, or
// flushDelay after the first byte of a batch, so that heavy output costs a few
// messages per megabyte while live output (a build log) is never held back
// longer than that; the rest goes before the command's reply. Lines are the
// client's business: it splits the text at "\n".
const (
	flushSize  = 256 << 10
	flushDelay = 5 * time.Millisecond
)

// outputBatcher gathers the runs of one command's output. Writers that find a
// full batch send it themselves, so a slow client slows the command down
// (its pipes fill) instead of the binary buffering without bound.
type outputBatcher struct {
	send   func([]OutputRun) // one notification
	sendMu sync.Mutex        // batches leave one at a time, in order

	mu     sync.Mutex
	runs   []pendingRun
	size   int
	timer  *time.Timer // armed while a batch waits
	closed bool
}

func newOutputBatcher(send func([]OutputRun)) *outputBatcher {
	b := &outputBatcher{send: send}
	b.timer = time.AfterFunc(time.Hour, b.flush)
	b.timer.Stop()
	return b
}

// stream returns the writer of one stream ("stdout" or "stderr").
func (b *outputBatcher) stream(name string) *outputStream { return &outputStream{b: b, name: name} }

func (b *outputBatcher) add(stream string, text []byte) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if n := len(b.runs); n > 0 && b.runs[n-1].stream == stream {
		b.runs[n-1].text = append(b.runs[n-1].text, text...)
	} else {
		b.runs = append(b.runs, pendingRun{stream: stream, text: append([]byte(nil), text...)})
	}
	first := b.size == 0
	b.size += len(text)
	full := b.size >= flushSize
	if first && !full {
		b.timer.Reset(flushDelay)
	}
	b.mu.Unlock()
	if full {
		b.flush()
	}
}

// flush sends the waiting batch, if any.
func (b *outputBatcher) flush() {
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	b.mu.Lock()
	runs := b.runs
	b.runs, b.size = nil, 0
	b.timer.Stop()
	b.mu.Unlock()
	if len(runs) > 0 {
		out := make([]OutputRun, len(runs))
		for i, r := range runs {
			out[i] = OutputRun{Stream: r.stream, Text: string(r.text)}
		}
		b.send(out)
	}
}

type pendingRun struct {
	stream string
	text   []byte
}

// Close sends what is left, a stream's incomplete UTF-8 tail included, and
// drops later writes (none come: the command's output is read to its end).
func (b *outputBatcher) Close(streams ...*outputStream) {
	for _, s := range streams {
		s.mu.Lock()
		if len(s.carry) > 0 {
			b.add(s.name, s.carry)
			s.carry = nil
		}
		s.mu.Unlock()
	}
	b.flush()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// outputStream is one stream of a batcher. It holds back an incomplete UTF-8
// sequence at the end of a write until the next, so that a character split
// across two reads is not sent as two halves (each half would reach the
// client as U+FFFD). Bytes that are not UTF-8 become U+FFFD, as JSON text
// requires.
type outputStream struct {
	b     *outputBatcher
	name  string
	mu    sync.Mutex
	carry []byte
}

func (s *outputStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	if len(s.carry) > 0 {
		p = append(s.carry, p...)
		s.carry = nil
	}
	if cut := incompleteTail(p); cut < len(p) {
		s.carry = append([]byte(nil), p[cut:]...)
		p = p[:cut]
	}
	if len(p) > 0 {
		s.b.add(s.name, p)
	}
	return n, nil
}

// incompleteTail returns where a UTF-8 sequence that the end of p cuts short
// begins, or len(p).
func incompleteTail(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return i
			}
			break
		}
	}
	return len(p)
}

// encodeOutput is the command.output notification of runs, as JSON: what
// json.Marshal would write for CommandOutput, but in one pass over the text
// (see rawMessage) and without escaping <, > and & (JSON does not need it).
func encodeOutput(id jsonrpc2.ID, runs []OutputRun) rawMessage {
	size := 100
	for _, r := range runs {
		size += len(r.Text) + len(r.Text)/8 + 30
	}
	b := make([]byte, 0, size)
	b = append(b, `{"jsonrpc":"2.0","method":"`+NotifyCommandOutput+`","params":{"request_id":`...)
	idJSON, _ := id.MarshalJSON() // a number or a string: always encodes
	b = append(b, idJSON...)
	b = append(b, `,"output":[`...)
	for i, r := range runs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"stream":`...)
		b = appendJSONString(b, r.Stream)
		b = append(b, `,"text":`...)
		b = appendJSONString(b, r.Text)
		b = append(b, '}')
	}
	return append(b, "]}}"...)
}

// appendJSONString appends s as a JSON string. Like encoding/json, it writes
// each byte that is not UTF-8 as U+FFFD and escapes U+2028 and U+2029.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\\ufffd"...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, "\\u202"...)
			b = strconv.AppendInt(b, int64(r&0xf), 16)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
