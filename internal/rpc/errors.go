package rpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// errCancelled and errTimedOut are context causes, so a handler can tell a
// client's $/cancelRequest from its own timeout.
var (
	errCancelled = errors.New("request cancelled")
	errTimedOut  = errors.New("timed out")
)

// ErrorData is the `data` object of every application error.
type ErrorData struct {
	Kind                  string   `json:"kind"`
	Machine               string   `json:"machine,omitempty"`
	Available             []string `json:"available,omitempty"`
	OrbctlArgs            []string `json:"orbctl_args,omitempty"`
	OrbctlStderr          string   `json:"orbctl_stderr,omitempty"`
	ExitCode              *int     `json:"exit_code,omitempty"`
	Searched              []string `json:"searched,omitempty"`
	BinaryProtocolVersion int      `json:"binary_protocol_version,omitempty"`
	ClientProtocolVersion *int     `json:"client_protocol_version,omitempty"`
	Timeout               float64  `json:"timeout,omitempty"`
	Param                 string   `json:"param,omitempty"`
	// Escalation is set when a transfer's escalation command failed: the
	// client's escalation (e.g. sudo asking for a password) speaks there.
	Escalation *EscalationFailure `json:"escalation,omitempty"`
	// Mac is the ssh destination a relay (serve --mac) speaks for, on its
	// errors about that Mac; Reason is how reaching it failed
	// (internal/remote's Kind: unreachable, auth_failed, host_key,
	// binary_missing, dropped, failed).
	Mac    string `json:"mac,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// NewError is an application error in the protocol's shape.
func NewError(code int64, message string, data ErrorData) *jsonrpc2.Error {
	return newError(code, message, data)
}

// Cancelled is the error of a request cancelled by $/cancelRequest.
func Cancelled() *jsonrpc2.Error {
	return newError(CodeCancelled, "request cancelled", ErrorData{Kind: "cancelled"})
}

// EscalationFailure is how a transfer's escalation command ended.
type EscalationFailure struct {
	ExitCode int      `json:"exit_code"`
	Stderr   []string `json:"stderr"`
}

func newError(code int64, message string, data ErrorData) *jsonrpc2.Error {
	e := &jsonrpc2.Error{Code: code, Message: message}
	e.SetError(data)
	return e
}

func invalidParams(param, format string, a ...any) *jsonrpc2.Error {
	return newError(jsonrpc2.CodeInvalidParams, fmt.Sprintf(format, a...), ErrorData{Kind: "invalid_params", Param: param})
}

func ioError(machine, message string) *jsonrpc2.Error {
	return newError(CodeIOError, message, ErrorData{Kind: "io_error", Machine: machine})
}

var orbctlKinds = []struct {
	kind error
	code int64
	name string
}{
	{orbctl.ErrOrbctlNotFound, CodeOrbctlNotFound, "orbctl_not_found"},
	{orbctl.ErrOrbStackNotRunning, CodeOrbStackNotRunning, "orbstack_not_running"},
	{orbctl.ErrMachineNotFound, CodeMachineNotFound, "machine_not_found"},
	{orbctl.ErrMachineExists, CodeMachineExists, "machine_exists"},
	{orbctl.ErrBadArgument, CodeBadArgument, "bad_argument"},
	{orbctl.ErrNotReady, CodeNotReady, "not_ready"},
	{orbctl.ErrFailed, CodeOrbctlFailed, "orbctl_failed"},
}

// toRPCError turns any handler error into the wire error the protocol promises.
func toRPCError(ctx context.Context, err error) *jsonrpc2.Error {
	var rpcErr *jsonrpc2.Error
	if errors.As(err, &rpcErr) {
		return rpcErr
	}
	if errors.Is(context.Cause(ctx), errCancelled) || errors.Is(err, errCancelled) {
		return Cancelled()
	}
	var oe *orbctl.Error
	if errors.As(err, &oe) {
		for _, k := range orbctlKinds {
			if errors.Is(oe.Kind, k.kind) {
				data := ErrorData{Kind: k.name, Machine: oe.Machine, OrbctlArgs: oe.Args,
					OrbctlStderr: oe.Stderr, Searched: oe.Searched}
				if oe.Args != nil {
					code := oe.ExitCode
					data.ExitCode = &code
				}
				return newError(k.code, oe.Error(), data)
			}
		}
	}
	return newError(jsonrpc2.CodeInternalError, err.Error(), ErrorData{Kind: "internal"})
}
