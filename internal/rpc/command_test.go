package rpc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLineWriterSplitsLinesAcrossWrites(t *testing.T) {
	var got []string
	w := &lineWriter{stream: "stdout", emit: func(_, line string, _ bool) { got = append(got, line) }}
	for _, chunk := range []string{"a", "b\nc", "\n\nd\r\n", "tail"} {
		w.Write([]byte(chunk))
	}
	w.Flush()
	if want := []string{"ab", "c", "", "d\r", "tail"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestLineWriterCutsHugeLinesBetweenRunesAndMarksThePieces(t *testing.T) {
	type piece struct {
		line    string
		partial bool
	}
	var got []piece
	w := &lineWriter{stream: "stdout", emit: func(_, line string, partial bool) { got = append(got, piece{line, partial}) }}
	line := strings.Repeat("x", maxLine-1) + "é" + strings.Repeat("y", 10) // é straddles the limit
	for i := 0; i < len(line); i += 32 << 10 {
		w.Write([]byte(line[i:min(i+32<<10, len(line))]))
	}
	w.Write([]byte("\nnext\n"))
	if len(got) != 3 || got[0].line+got[1].line != line || got[2].line != "next" {
		t.Fatalf("got %d pieces, want the line in 2 pieces, then \"next\"", len(got))
	}
	if !got[0].partial || got[1].partial || got[2].partial {
		t.Fatalf("partial flags %v %v %v, want true false false", got[0].partial, got[1].partial, got[2].partial)
	}
	for _, p := range got {
		if !utf8.ValidString(p.line) || len(p.line) > maxLine {
			t.Fatalf("piece of %d bytes is invalid UTF-8 or too long", len(p.line))
		}
	}
}

func TestLineWriterMarksPiecesOfAnUnterminatedLastLine(t *testing.T) {
	var partial []bool
	w := &lineWriter{stream: "stderr", emit: func(_, _ string, p bool) { partial = append(partial, p) }}
	w.Write([]byte(strings.Repeat("z", 2*maxLine+5)))
	w.Flush()
	if len(partial) != 3 || !partial[0] || !partial[1] || partial[2] {
		t.Fatalf("partial flags %v, want [true true false]", partial)
	}
}

func TestLineWriterDoesNotMarkALineOfExactlyTheMaximum(t *testing.T) {
	var partial []bool
	w := &lineWriter{stream: "stdout", emit: func(_, _ string, p bool) { partial = append(partial, p) }}
	w.Write([]byte(strings.Repeat("z", maxLine)))
	w.Write([]byte("\n"))
	if len(partial) != 1 || partial[0] {
		t.Fatalf("partial flags %v, want one whole line", partial)
	}
}
