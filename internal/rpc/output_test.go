package rpc

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// sent records the batches an outputBatcher sends.
type sent struct {
	mu      sync.Mutex
	batches [][]OutputRun
}

func (s *sent) send(runs []OutputRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, runs)
}

// String shows the runs sent, adjacent runs of one stream joined: where a
// batch ends depends on timing, what the client reads does not.
func (s *sent) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var runs []OutputRun
	for _, batch := range s.batches {
		for _, r := range batch {
			if n := len(runs); n > 0 && runs[n-1].Stream == r.Stream {
				runs[n-1].Text += r.Text
			} else {
				runs = append(runs, r)
			}
		}
	}
	var b strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&b, "%s:%q ", r.Stream, r.Text)
	}
	return b.String()
}

func TestOutputKeepsTheOrderOfStreamsAndJoinsWritesOfOneStream(t *testing.T) {
	var got sent
	b := newOutputBatcher(got.send)
	out, errs := b.stream("stdout"), b.stream("stderr")
	out.Write([]byte("a"))
	out.Write([]byte("b\nc"))
	errs.Write([]byte("e\n"))
	out.Write([]byte("\n\nd\r\n"))
	out.Write([]byte("tail"))
	b.Close(out, errs)
	if want := `stdout:"ab\nc" stderr:"e\n" stdout:"\n\nd\r\ntail" `; got.String() != want {
		t.Fatalf("sent %s, want %s", got.String(), want)
	}
}

func TestOutputHoldsACharacterCutBetweenWritesUntilItIsWhole(t *testing.T) {
	var got sent
	b := newOutputBatcher(got.send)
	out, errs := b.stream("stdout"), b.stream("stderr")
	euro := []byte("€") // 3 bytes
	out.Write(append([]byte("price "), euro[:1]...))
	out.Write(euro[1:2])
	out.Write(append(euro[2:], '\n'))
	errs.Write([]byte{'x', 0xe2, 0x82}) // cut short for good: the command ended
	b.Close(out, errs)
	// Whole in the runs (each half alone would reach the client as U+FFFD);
	// the tail the command never finished goes last, to become U+FFFD in JSON.
	if want := `stdout:"price €\n" stderr:"x\xe2\x82" `; got.String() != want {
		t.Fatalf("sent %s, want %s", got.String(), want)
	}
	for _, batch := range got.batches {
		for _, r := range batch {
			if r.Stream == "stdout" && !utf8.ValidString(r.Text) {
				t.Fatalf("a run of %q: the character was sent in pieces", r.Text)
			}
		}
	}
}

func TestOutputIsSentSoonWithoutWaitingForTheCommandToEnd(t *testing.T) {
	var got sent
	b := newOutputBatcher(got.send)
	out := b.stream("stdout")
	out.Write([]byte("building...\n"))
	deadline := time.Now().Add(5 * time.Second)
	for got.String() == "" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got.String() != `stdout:"building...\n" ` {
		t.Fatalf("sent %s before the command ended, want the line", got.String())
	}
	b.Close(out)
}

func TestOutputSendsAFullBatchAtOnceAndAWriterWaitsForASlowClient(t *testing.T) {
	release := make(chan struct{})
	var got sent
	b := newOutputBatcher(func(runs []OutputRun) {
		<-release // the client reads slowly
		got.send(runs)
	})
	out := b.stream("stdout")
	chunk := []byte(strings.Repeat("x", 64<<10))
	wrote := make(chan int, 100)
	go func() {
		for i := 0; i < 20; i++ { // 1.25 MiB, five batches
			out.Write(chunk)
			wrote <- i
		}
		close(wrote)
	}()
	time.Sleep(200 * time.Millisecond)
	b.mu.Lock()
	waiting := b.size
	b.mu.Unlock()
	// One batch is being sent; the writer may fill one more, then waits.
	if waiting > 2*flushSize {
		t.Fatalf("%d bytes wait in the binary for a client that does not read, want at most %d", waiting, 2*flushSize)
	}
	if len(wrote) >= 20 {
		t.Fatalf("the writer never waited for the client")
	}
	close(release)
	for range wrote {
	}
	b.Close(out)
	total := 0
	for _, batch := range got.batches {
		for _, r := range batch {
			total += len(r.Text)
		}
	}
	if total != 20*len(chunk) {
		t.Fatalf("%d bytes sent, want %d", total, 20*len(chunk))
	}
}

func TestOutputAfterCloseIsDropped(t *testing.T) {
	var got sent
	b := newOutputBatcher(got.send)
	out := b.stream("stdout")
	b.Close(out)
	out.Write([]byte("late\n"))
	time.Sleep(3 * flushDelay)
	if got.String() != "" {
		t.Fatalf("sent %s after close", got.String())
	}
}

// decodeOutput reads a command.output notification as a client does.
func decodeOutput(t testing.TB, msg []byte) (jsonrpc2.ID, []OutputRun) {
	t.Helper()
	var n struct {
		JSONRPC string        `json:"jsonrpc"`
		Method  string        `json:"method"`
		Params  CommandOutput `json:"params"`
	}
	if err := json.Unmarshal(msg, &n); err != nil || n.JSONRPC != "2.0" || n.Method != NotifyCommandOutput {
		t.Fatalf("not a command.output notification (%v): %.200s", err, msg)
	}
	return n.Params.RequestID, n.Params.Output
}

func TestEncodedOutputIsWhatJSONMarshalWouldSend(t *testing.T) {
	runs := []OutputRun{
		{Stream: "stdout", Text: "plain\n<html> & \"quotes\" \\ back\tslash\r\n"},
		{Stream: "stderr", Text: "\x00\x01\x1f\x7f é € 😀 \u2028\u2029"},
		{Stream: "stdout", Text: ""},
	}
	for _, id := range []jsonrpc2.ID{{Num: 7}, {Str: "x\"y\n", IsString: true}} {
		msg := encodeOutput(id, runs)
		gotID, gotRuns := decodeOutput(t, msg)
		if gotID != id || fmt.Sprint(gotRuns) != fmt.Sprint(runs) {
			t.Errorf("%s decodes to %v %q", msg, gotID, gotRuns)
		}
	}
}

func FuzzEncodeOutput(f *testing.F) {
	for _, s := range []string{"", "a\nb", "\xff\xfe", "\xe2\x82", "\xed\xa0\x80", "\u2028", "\"\\", "\x00\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		_, runs := decodeOutput(t, encodeOutput(jsonrpc2.ID{Num: 1}, []OutputRun{{Stream: "stdout", Text: text}}))
		// encoding/json's own encoding of the same text, read back.
		want, _ := json.Marshal(text)
		var wantText string
		json.Unmarshal(want, &wantText)
		if len(runs) != 1 || runs[0].Text != wantText {
			t.Fatalf("%q arrives as %q, encoding/json sends %q", text, runs, wantText)
		}
	})
}

// BenchmarkOutputPath: command output from the session's writes to encoded
// notifications, as `make bench`'s 200 MB scenario drives it.
func BenchmarkOutputPath(b *testing.B) {
	chunk := []byte(strings.Repeat(strings.Repeat("x", 99)+"\n", 655))
	b.SetBytes(int64(len(chunk)) * 100)
	for i := 0; i < b.N; i++ {
		out := newOutputBatcher(func(runs []OutputRun) { _ = encodeOutput(jsonrpc2.ID{Num: 1}, runs) })
		st := out.stream("stdout")
		for j := 0; j < 100; j++ {
			st.Write(chunk)
		}
		out.Close(st)
	}
}
