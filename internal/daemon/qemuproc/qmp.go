package qemuproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// maxQMPMessage bounds one QMP message (one line of JSON).
const maxQMPMessage = 1 << 20

// QMPError is an error reply from QEMU.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("QMP %s failed: %s: %s", e.Command, e.Class, e.Desc)
}

// QMP is a client of one QEMU monitor connection. Its methods may be called
// from several goroutines; commands run one at a time. Events are skipped.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
	// Version is QEMU's version from the greeting, e.g. "7.2.22".
	Version string

	mu     sync.Mutex
	nextID uint64
}

// qmpMessage is any message QEMU sends; exactly one of its kinds is set.
type qmpMessage struct {
	Greeting *struct {
		Version struct {
			QEMU struct {
				Major, Minor, Micro int
			} `json:"qemu"`
		} `json:"version"`
	} `json:"QMP"`
	Event  string          `json:"event"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	ID     json.RawMessage `json:"id"`
}

type qmpKind int

const (
	qmpGreeting qmpKind = iota + 1
	qmpEvent
	qmpReturn
	qmpErrorReply
)

// decodeQMPMessage decodes one line from QEMU and says what it is.
func decodeQMPMessage(line []byte) (qmpMessage, qmpKind, error) {
	var m qmpMessage
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return m, 0, fmt.Errorf("QMP message is not a JSON object: %.80q", line)
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, 0, fmt.Errorf("QMP message is not valid JSON: %w", err)
	}
	switch {
	case m.Greeting != nil:
		return m, qmpGreeting, nil
	case m.Event != "":
		return m, qmpEvent, nil
	case m.Error != nil:
		return m, qmpErrorReply, nil
	case m.Return != nil:
		return m, qmpReturn, nil
	}
	return m, 0, fmt.Errorf("QMP message is neither a greeting, an event nor a reply: %.80q", line)
}

// DialQMP connects to the QMP socket at path, reads the greeting and
// leaves capabilities negotiation mode. ctx bounds the whole handshake.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to QMP socket: %w", err)
	}
	q := &QMP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	fail := func(err error) (*QMP, error) {
		conn.Close()
		return nil, err
	}
	stop := q.bind(ctx)
	line, err := q.readLine()
	if err != nil {
		stop()
		return fail(fmt.Errorf("read QMP greeting from %s: %w", path, q.ctxErr(ctx, err)))
	}
	m, kind, err := decodeQMPMessage(line)
	if err != nil || kind != qmpGreeting {
		stop()
		return fail(fmt.Errorf("%s did not greet as a QMP monitor (got %.80q)", path, line))
	}
	v := m.Greeting.Version.QEMU
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	stop()
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		return fail(err)
	}
	return q, nil
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// bind makes ctx's deadline and cancellation interrupt I/O on the
// connection until the returned function is called.
func (q *QMP) bind(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		q.conn.SetDeadline(dl)
	} else {
		q.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		q.conn.SetDeadline(time.Time{})
	}
}

// ctxErr prefers the context's error to the I/O timeout it caused.
func (q *QMP) ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

func (q *QMP) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := q.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxQMPMessage {
			return nil, fmt.Errorf("QMP message longer than %d bytes", maxQMPMessage)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(line) == 0 {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Execute runs command with args (nil for none) and returns its "return"
// value. An error reply is a *QMPError.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextID++
	id := "banger-" + strconv.FormatUint(q.nextID, 10)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode QMP %s: %w", command, err)
	}
	stop := q.bind(ctx)
	defer stop()
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("send QMP %s: %w", command, q.ctxErr(ctx, err))
	}
	want, _ := json.Marshal(id)
	for {
		line, err := q.readLine()
		if err != nil {
			return nil, fmt.Errorf("read QMP reply to %s: %w", command, q.ctxErr(ctx, err))
		}
		m, kind, err := decodeQMPMessage(line)
		if err != nil {
			return nil, fmt.Errorf("read QMP reply to %s: %w", command, err)
		}
		if kind != qmpReturn && kind != qmpErrorReply {
			continue // events, and a stray greeting
		}
		if !bytes.Equal(m.ID, want) {
			continue // a reply to someone else's command
		}
		if kind == qmpErrorReply {
			m.Error.Command = command
			return nil, m.Error
		}
		return m.Return, nil
	}
}

// Status is the reply of query-status.
type Status struct {
	Status  string `json:"status"` // "running", "paused", "shutdown", ...
	Running bool   `json:"running"`
}

// QueryStatus asks for the VM's run state.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var st Status
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Status == "" {
		return st, fmt.Errorf("QMP query-status: unexpected reply %.80q", raw)
	}
	return st, nil
}

// SystemPowerdown presses the guest's ACPI power button. The guest may
// ignore it.
func (q *QMP) SystemPowerdown(ctx context.Context) error {
	_, err := q.Execute(ctx, "system_powerdown", nil)
	return err
}

// Quit makes QEMU exit at once. The connection closing before the reply
// arrives counts as success.
func (q *QMP) Quit(ctx context.Context) error {
	_, err := q.Execute(ctx, "quit", nil)
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)) {
		return nil
	}
	return err
}
