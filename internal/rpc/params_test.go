package rpc

import (
	"fmt"
	"strings"
	"testing"
)

func TestTimeoutsOutsideTheRangeAreInvalidParams(t *testing.T) {
	w := startWire(t, map[string]string{"web": "running"})
	params := map[string]string{
		MethodCommandRun:     `{"machine":"web","command":"true","timeout":%s}`,
		MethodMachineConnect: `{"machine":"web","timeout":%s}`,
	}
	n := 0
	for method, p := range params {
		for _, timeout := range []string{"1e10", "1e308", "9223372036854775808", "604800.5", "-1", "-1e-300"} {
			n++
			w.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":`+p+`}`, n, method, timeout))
			m := w.recvReply()
			m.wantError(t, fmt.Sprint(n), -32602, "invalid_params")
			if m.Error.Data.Param != "timeout" || !strings.Contains(m.Error.Message, "604800") {
				t.Errorf("%s timeout %s: %s, want param timeout and the range named", method, timeout, m.raw)
			}
		}
		for _, timeout := range []string{"604800", "0", "1e-300"} {
			n++
			w.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":`+p+`}`, n, method, timeout))
			if m := w.recvReply(); m.Error != nil && (timeout != "1e-300" || m.Error.Code != CodeTimeout && m.Error.Code != CodeNotReady) {
				t.Errorf("%s timeout %s: %s", method, timeout, m.raw)
			}
		}
	}
}
