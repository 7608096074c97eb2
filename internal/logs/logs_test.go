package logs

import (
	"encoding/json"
	"testing"
	"time"
)

// Entries as `journalctl -o json` prints them (systemd 252), one with a binary
// MESSAGE (an array of bytes).
func TestJournalEntriesBecomeLinesWithTheirTimeAndCursor(t *testing.T) {
	entry := `{"__CURSOR":"s=abc;i=1f2","__REALTIME_TIMESTAMP":"1767348001123456","MESSAGE":"Started nginx.service","SYSLOG_IDENTIFIER":"systemd","_PID":"1"}`
	l, cursor, ok := journalLine("web", entry)
	if !ok || cursor != "s=abc;i=1f2" || l.Message != "systemd[1]: Started nginx.service" || l.Source != "journal" ||
		!l.Time.Equal(time.UnixMicro(1767348001123456)) {
		t.Fatalf("%+v %q", l, cursor)
	}
	binary := `{"__CURSOR":"c2","__REALTIME_TIMESTAMP":"1767348002000000","MESSAGE":[104,105,255],"SYSLOG_IDENTIFIER":"app"}`
	if l, _, _ := journalLine("web", binary); l.Message != "app: hi\uFFFD" {
		t.Fatalf("%q", l.Message)
	}
	if _, _, ok := journalLine("web", "-- No entries --"); ok {
		t.Fatal("a non-JSON line was taken for an entry")
	}
}

func TestTimesOfSyslogLines(t *testing.T) {
	prev := time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ line, when, rest string }{
		{"2026-01-02T10:00:01.5+01:00 web app[1]: hi", "2026-01-02T09:00:01.5Z", "web app[1]: hi"},
		{"Jan  2 10:00:04 db pg[2]: x", "2025-01-02T10:00:04Z", "db pg[2]: x"}, // the year of the line before
		{"[orbsim] web: started", "", "[orbsim] web: started"},
		{"2026-13-45T99:00:00Z not a time", "", "2026-13-45T99:00:00Z not a time"},
	} {
		got, rest := parseTime(tc.line, prev)
		when := ""
		if !got.IsZero() {
			when = got.Format(time.RFC3339Nano)
		}
		if when != tc.when || rest != tc.rest {
			t.Errorf("%q: %q %q", tc.line, when, rest)
		}
	}
}

func TestAJSONLineWithoutATimeSaysNull(t *testing.T) {
	b, _ := json.Marshal(Line{Machine: "web", Source: "orbstack", Message: "booting"})
	if string(b) != `{"time":null,"machine":"web","source":"orbstack","message":"booting"}` {
		t.Fatal(string(b))
	}
}
