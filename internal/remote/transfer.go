package remote

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/pyinfra-orbstack/pyinfra-orbstack/internal/rpc"
)

// transferBuffer is the size of the buffers a transfer's bytes go through:
// large, so that ssh, not the copying, bounds the throughput.
const transferBuffer = 1 << 20

// startTransfer runs a file.put or file.get in a goroutine of its own,
// cancellable by $/cancelRequest.
func (r *Relay) startTransfer(key string, rawID json.RawMessage, method string, body []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	if r.inFlight(key) {
		r.mu.Unlock()
		cancel()
		r.write(rpc.ErrorReply(rawID, duplicate(rawID)))
		return
	}
	if dead := r.dead; dead != nil {
		r.mu.Unlock()
		cancel()
		r.write(rpc.ErrorReply(rawID, dead))
		return
	}
	r.transfers[key] = cancel
	r.transfersWG.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.transfersWG.Done()
		start := time.Now()
		result, e := r.transfer(ctx, method, body)
		r.mu.Lock()
		delete(r.transfers, key)
		r.mu.Unlock()
		if e == nil && ctx.Err() == nil {
			r.write(resultReply(rawID, result))
		} else {
			if ctx.Err() != nil {
				e = rpc.Cancelled()
			}
			r.write(rpc.ErrorReply(rawID, e))
		}
		cancel()
		if r.opts.Debug {
			r.opts.Logger.Printf("%s #%s through Mac %s took %s", method, rawID, r.opts.Mac.Host, time.Since(start).Round(time.Millisecond))
		}
	}()
}

func resultReply(rawID, result json.RawMessage) []byte {
	body, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result"`
	}{"2.0", rawID, result})
	return body
}

// cancelTransfer cancels the transfer a $/cancelRequest names, if it is one.
func (r *Relay) cancelTransfer(body []byte) bool {
	var n struct {
		Params struct {
			ID json.RawMessage `json:"id"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &n) != nil {
		return false
	}
	key, ok := idKey(n.Params.ID)
	if !ok {
		return false
	}
	r.mu.Lock()
	cancel := r.transfers[key]
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return cancel != nil
}

// asRPC is err as the protocol's error.
func asRPC(err error) *jsonrpc2.Error {
	var e *jsonrpc2.Error
	if errors.As(err, &e) {
		return e
	}
	return rpc.NewError(jsonrpc2.CodeInternalError, err.Error(), rpc.ErrorData{Kind: "internal"})
}

// transfer does one file.put or file.get: the local checks and the local
// file here, the rest by `pyinfra-orbstack transfer` on the Mac.
func (r *Relay) transfer(ctx context.Context, method string, body []byte) (json.RawMessage, *jsonrpc2.Error) {
	var req struct {
		Params json.RawMessage `json:"params"`
	}
	json.Unmarshal(body, &req)
	decode := func(v any) *jsonrpc2.Error {
		if len(req.Params) == 0 || string(req.Params) == "null" {
			return nil
		}
		if err := json.Unmarshal(req.Params, v); err != nil {
			return rpc.NewError(jsonrpc2.CodeInvalidParams, fmt.Sprintf("invalid params for %s: %v", method, err),
				rpc.ErrorData{Kind: "invalid_params"})
		}
		return nil
	}
	if method == rpc.MethodFilePut {
		var p rpc.FilePutParams
		if e := decode(&p); e != nil {
			return nil, e
		}
		if err := rpc.CheckPutParams(p); err != nil {
			return nil, asRPC(err)
		}
		src, size, done, err := rpc.OpenLocal(p.Machine, p.LocalPath)
		if err != nil {
			return nil, asRPC(err)
		}
		defer done()
		header := rpc.TransferParams{Machine: p.Machine, User: p.User, RemotePath: p.RemotePath, Escalation: p.Escalation, Size: &size}
		return r.runTransfer(ctx, method, header, src, nil)
	}
	var p rpc.FileGetParams
	if e := decode(&p); e != nil {
		return nil, e
	}
	if err := rpc.CheckGetParams(p); err != nil {
		return nil, asRPC(err)
	}
	header := rpc.TransferParams{Machine: p.Machine, User: p.User, RemotePath: p.RemotePath, Escalation: p.Escalation}
	var result json.RawMessage
	var rpcErr *jsonrpc2.Error
	size, err := rpc.Download(p.Machine, p.LocalPath, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, transferBuffer)
		result, rpcErr = r.runTransfer(ctx, method, header, nil, bw)
		if rpcErr != nil {
			return rpcErr
		}
		if err := bw.Flush(); err != nil {
			rpcErr = rpc.NewError(rpc.CodeIOError, fmt.Sprintf("cannot write the local file: %v", err), rpc.ErrorData{Kind: "io_error", Machine: p.Machine})
			return rpcErr
		}
		return nil
	})
	if err != nil {
		return nil, asRPC(err)
	}
	if result == nil {
		result, _ = json.Marshal(rpc.FileResult{Size: size})
	}
	return result, nil
}

// runTransfer runs `pyinfra-orbstack transfer` on the Mac in a new ssh
// session (over the master when there is one): the header and src (a put's
// bytes) to its stdin, a get's bytes from its stdout to dst. Its stdin stays
// open until the answer is read: closing it, or killing the session when
// ctx ends, stops the transfer there.
func (r *Relay) runTransfer(ctx context.Context, method string, params rpc.TransferParams, src io.Reader, dst io.Writer) (json.RawMessage, *jsonrpc2.Error) {
	rawParams, _ := json.Marshal(params)
	header, _ := json.Marshal(rpc.TransferHeader{Method: method, Params: rawParams})
	cmd := exec.Command(SSHProgram(r.opts.Getenv), r.session.SSHArgs(r.opts.Getenv, "transfer")...)
	ownGroup(cmd)
	stderr := &tail{max: 16 << 10}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, asRPC(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, asRPC(err)
	}
	if err := cmd.Start(); err != nil {
		return nil, macError(&Error{Kind: Unreachable, Mac: r.opts.Mac.Host, Message: fmt.Sprintf(
			"cannot run ssh to reach Mac %s: %v: install OpenSSH's client, or set %s to it", r.opts.Mac.Host, err, EnvSSH)})
	}
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-ctx.Done():
			killGroup(cmd, syscall.SIGKILL)
		case <-ended:
		}
	}()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if _, err := stdin.Write(append(header, '\n')); err != nil || src == nil {
			return
		}
		io.CopyBuffer(stdin, src, make([]byte, transferBuffer))
	}()
	result, remoteErr, readErr := rpc.ReadTransferAnswer(bufio.NewReaderSize(stdout, transferBuffer), dst)
	garbled := readErr != nil && readErr != io.EOF && !errors.Is(readErr, io.ErrUnexpectedEOF)
	if garbled {
		// Not a transfer's answer: nothing more to read from it.
		killGroup(cmd, syscall.SIGKILL)
	}
	stdin.Close()
	<-sent
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitErr:
	case <-time.After(r.opts.StopWait):
		killGroup(cmd, syscall.SIGKILL)
		werr = <-waitErr
	}
	if readErr == nil {
		if remoteErr == nil || remoteErr.Code != jsonrpc2.CodeInvalidParams {
			r.mu.Lock()
			r.transferRuns[params.Machine]++
			r.mu.Unlock()
		}
		return result, remoteErr
	}
	if ctx.Err() != nil {
		return nil, rpc.Cancelled()
	}
	r.mu.Lock()
	dead := r.dead
	r.mu.Unlock()
	if dead != nil {
		return nil, dead
	}
	if garbled {
		return nil, macError(&Error{Kind: Failed, Mac: r.opts.Mac.Host, Message: fmt.Sprintf(
			"the transfer on Mac %s answered with something else than a pyinfra-orbstack transfer (%v): is its pyinfra-orbstack the same version as here (%s), and does no shell startup file there print text?",
			r.opts.Mac.Host, readErr, r.opts.Version)})
	}
	code := 255
	var exit *exec.ExitError
	if errors.As(werr, &exit) && exit.ExitCode() >= 0 {
		code = exit.ExitCode()
	} else if werr == nil {
		code = 0
	}
	if code == 0 { // ssh ended well, without an answer: not our transfer
		return nil, macError(&Error{Kind: Failed, Mac: r.opts.Mac.Host, Message: fmt.Sprintf(
			"the transfer on Mac %s gave no answer (%v; %s): is its pyinfra-orbstack the same version as here (%s)?",
			r.opts.Mac.Host, readErr, orNothing(lastLines(stderr.String(), 2)), r.opts.Version)})
	}
	return nil, macError(Classify(r.opts.Mac, code, stderr.String()))
}
