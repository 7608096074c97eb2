// Package rpc serves the shim ↔ binary protocol (docs/protocol.md): JSON-RPC 2.0
// with Content-Length framing on a byte stream, handled concurrently, with
// per-request cancellation and command output streamed as notifications.
package rpc

import (
	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/orbctl"
)

// ProtocolVersion is bumped on any incompatible change to docs/protocol.md.
// 2: command.output carries runs of text, many lines each, instead of one
// line per notification.
const ProtocolVersion = 2

// Capabilities lists the optional features a client may rely on.
// CapTransferStream says the binary has the transfer subcommand (transfer.go),
// which a relay on another Mac uses for file.put and file.get.
var Capabilities = []string{"command.run", "file.put", "file.get", "file.escalation", "machines.list", "machine.connect", "cancel", CapTransferStream}

// CapTransferStream is the capability of the transfer subcommand: a relay
// (serve --mac) refuses a remote binary without it.
const CapTransferStream = "transfer.stream"

// Error codes (docs/protocol.md, "Errors").
const (
	CodeOrbctlNotFound     = -32001
	CodeOrbStackNotRunning = -32002
	CodeMachineNotFound    = -32003
	CodeMachineExists      = -32004
	CodeTimeout            = -32005
	CodeOrbctlFailed       = -32006
	CodeBadArgument        = -32007
	CodeIOError            = -32008
	CodeProtocolMismatch   = -32009
	CodeNotReady           = -32010
	CodeMacUnreachable     = -32011 // a relay (serve --mac) could not reach its Mac, or lost it
	CodeCancelled          = -32800
)

// Method and notification names.
const (
	MethodInitialize     = "initialize"
	MethodMachinesList   = "machines.list"
	MethodMachineConnect = "machine.connect"
	MethodCommandRun     = "command.run"
	MethodFilePut        = "file.put"
	MethodFileGet        = "file.get"
	MethodShutdown       = "shutdown"
	NotifyCancelRequest  = "$/cancelRequest"
	NotifyCommandOutput  = "command.output"
)

type InitializeParams struct {
	ProtocolVersion *int   `json:"protocol_version"`
	ClientVersion   string `json:"client_version"`
}

type OrbctlStatus struct {
	Path  string `json:"path"`
	Found bool   `json:"found"`
}

type InitializeResult struct {
	ProtocolVersion int          `json:"protocol_version"`
	BinaryVersion   string       `json:"binary_version"`
	Capabilities    []string     `json:"capabilities"`
	Orbctl          OrbctlStatus `json:"orbctl"`
	// MaxFrame is the largest frame body the binary reads (added later:
	// a client that does not see it may assume the same 16 MiB).
	MaxFrame int `json:"max_frame"`
	// DefaultConnectTimeout is what machine.connect's timeout 0 means, in
	// seconds, so that a client waiting on it need not know it.
	DefaultConnectTimeout float64 `json:"default_connect_timeout"`
}

type MachinesListResult struct {
	Machines []orbctl.Machine `json:"machines"`
}

// CreateSpec is machine.connect's create param. Every key but image is
// optional; the 2.x keys (user_data to mounts) were added later and are
// passed to orbctl create only when given.
type CreateSpec struct {
	Image          string   `json:"image"`
	Arch           string   `json:"arch"`
	User           string   `json:"user"`
	UserData       string   `json:"user_data"` // absolute path of a cloud-init file
	Isolated       bool     `json:"isolated"`
	IsolateNetwork bool     `json:"isolate_network"`
	CPUs           int      `json:"cpus"`
	Memory         string   `json:"memory"` // e.g. "8G"
	Disk           string   `json:"disk"`   // e.g. "64G"
	Mounts         []string `json:"mounts"` // HOST:GUEST, needs isolated
}

type MachineConnectParams struct {
	Machine string      `json:"machine"`
	User    string      `json:"user"`    // whose commands will follow ("" = default user): their session is started now
	Start   *bool       `json:"start"`   // absent = true
	Timeout float64     `json:"timeout"` // seconds; 0 = 120
	Create  *CreateSpec `json:"create"`
}

type MachineConnectResult struct {
	Machine orbctl.Machine `json:"machine"`
	Started bool           `json:"started"`
	Created bool           `json:"created"`
}

type CommandRunParams struct {
	Machine  string            `json:"machine"`
	Command  string            `json:"command"`
	User     string            `json:"user"`
	Workdir  string            `json:"workdir"`
	Env      map[string]string `json:"env"`
	StdinB64 string            `json:"stdin_b64"`
	Timeout  float64           `json:"timeout"` // seconds; 0 = none
}

type CommandRunResult struct {
	ExitCode int `json:"exit_code"`
}

// CommandOutput is the params of a command.output notification: the next
// runs of a command's output, in the order the binary read them.
type CommandOutput struct {
	RequestID jsonrpc2.ID `json:"request_id"`
	Output    []OutputRun `json:"output"`
}

// OutputRun is text of one stream: any number of lines, the last of which may
// continue in a later run of the same stream.
type OutputRun struct {
	Stream string `json:"stream"` // "stdout" or "stderr"
	Text   string `json:"text"`
}

// FilePutParams is file.put's params. (A "mode" key, which early shims sent
// as "" and nothing set, is no longer read.)
type FilePutParams struct {
	Machine    string      `json:"machine"`
	User       string      `json:"user"`
	LocalPath  string      `json:"local_path"`
	RemotePath string      `json:"remote_path"`
	Escalation *Escalation `json:"escalation"`
}

type FileGetParams struct {
	Machine    string      `json:"machine"`
	User       string      `json:"user"`
	RemotePath string      `json:"remote_path"`
	LocalPath  string      `json:"local_path"`
	Escalation *Escalation `json:"escalation"`
}

// Escalation makes a transfer's remote end another user's (sudo, su, doas):
// the bytes are staged as User in StageDir, a new directory, and Command,
// which the client built with its own escalation (it may hold a password, so
// it reaches the machine on orbctl's stdin only), runs `sh STAGE_DIR/run` as
// the target user, which writes the destination or reads the source.
type Escalation struct {
	Command  string `json:"command"`
	StageDir string `json:"stage_dir"`
}

type FileResult struct {
	Size int64 `json:"size"`
}

type CancelParams struct {
	ID jsonrpc2.ID `json:"id"`
}
