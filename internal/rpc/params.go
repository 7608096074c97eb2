package rpc

import "time"

// MaxTimeout is the longest timeout command.run and machine.connect accept
// (docs/protocol.md). Longer ones, which nobody means, would overflow a
// time.Duration (about 292 years) and time out at once.
const MaxTimeout = 7 * 24 * time.Hour

// checkTimeout checks a timeout param in seconds: 0 (the method's default)
// to MaxTimeout.
func checkTimeout(seconds float64) error {
	if !(seconds >= 0 && seconds <= MaxTimeout.Seconds()) { // NaN too, though JSON has none
		return invalidParams("timeout", "timeout must be a number of seconds from 0 to %g (7 days), got %g", MaxTimeout.Seconds(), seconds)
	}
	return nil
}
