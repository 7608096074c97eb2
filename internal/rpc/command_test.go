package rpc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLineWriterSplitsLinesAcrossWrites(t *testing.T) {
	var got []string
	w := &lineWriter{stream: "stdout", emit: func(_, line string) { got = append(got, line) }}
	for _, chunk := range []string{"a", "b\nc", "\n\nd\r\n", "tail"} {
		w.Write([]byte(chunk))
	}
	w.Flush()
	if want := []string{"ab", "c", "", "d\r", "tail"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestLineWriterCutsHugeLinesBetweenRunes(t *testing.T) {
	var got []string
	w := &lineWriter{stream: "stdout", emit: func(_, line string) { got = append(got, line) }}
	line := strings.Repeat("x", maxLine-1) + "é" + strings.Repeat("y", 10) // é straddles the limit
	for i := 0; i < len(line); i += 32 << 10 {
		w.Write([]byte(line[i:min(i+32<<10, len(line))]))
	}
	w.Write([]byte("\n"))
	if len(got) != 2 || got[0]+got[1] != line {
		t.Fatalf("got %d pieces", len(got))
	}
	for _, piece := range got {
		if !utf8.ValidString(piece) || len(piece) > maxLine {
			t.Fatalf("piece of %d bytes is invalid UTF-8 or too long", len(piece))
		}
	}
}
