package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Op is one event of the history. An operation is an invoke followed by
// one ok, fail or info with the same ID (info: the outcome is unknown, as
// for a publish whose connection broke before its acknowledgement).
// Deliveries, faults and node events are single ok/info events.
type Op struct {
	Index    int64  `json:"index"`
	Time     int64  `json:"time"` // nanoseconds since the run began, one clock for all
	ID       int64  `json:"id,omitempty"`
	Type     string `json:"type"` // invoke, ok, fail, info
	F        string `json:"f"`    // connect, publish, deliver, subscribe, unsubscribe, disconnect, conn-lost, read, probe, fault-start, fault-stop, node-exit
	Workload string `json:"workload,omitempty"`
	Node     int    `json:"node"` // -1: none
	Client   string `json:"client,omitempty"`
	Conn     int    `json:"conn,omitempty"` // connection number of the client
	Proto    int    `json:"proto,omitempty"`
	Topic    string `json:"topic,omitempty"`
	Payload  string `json:"payload,omitempty"` // payload id
	QoS      int    `json:"qos,omitempty"`
	Retain   bool   `json:"retain,omitempty"`
	Dup      bool   `json:"dup,omitempty"`
	PacketID int    `json:"packet_id,omitempty"`
	Reason   *int   `json:"reason,omitempty"`
	// connect
	CleanStart     bool  `json:"clean_start,omitempty"`
	Expiry         int64 `json:"expiry,omitempty"` // session expiry, seconds; -1 never
	SessionPresent *bool `json:"session_present,omitempty"`
	// reads, faults, probes
	Values map[string]string `json:"values,omitempty"`
	Value  string            `json:"value,omitempty"`
	Nodes  []int             `json:"nodes,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// History appends ops to a JSON-lines file and keeps them in memory.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []Op
	f     *os.File
	w     *bufio.Writer
	next  int64
}

// NewHistory writes to path (when not empty).
func NewHistory(path string) (*History, error) {
	h := &History{start: time.Now()}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		h.f, h.w = f, bufio.NewWriterSize(f, 1<<16)
	}
	return h, nil
}

// Now is the history clock: nanoseconds since the run began.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records op at the current time and returns it with index and time.
func (h *History) Add(op Op) Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Time = int64(time.Since(h.start))
	op.Index = int64(len(h.ops))
	h.ops = append(h.ops, op)
	if h.w != nil {
		b, _ := json.Marshal(op)
		h.w.Write(b)
		h.w.WriteByte('\n')
	}
	return op
}

// Invoke records the invocation of an operation; the returned function
// records its completion (ok, fail or info) with the same id, letting the
// caller fill in what the response said.
func (h *History) Invoke(op Op) func(typ string, fill func(*Op)) Op {
	h.mu.Lock()
	h.next++
	id := h.next
	h.mu.Unlock()
	op.ID, op.Type = id, "invoke"
	h.Add(op)
	return func(typ string, fill func(*Op)) Op {
		done := op
		done.Type = typ
		if fill != nil {
			fill(&done)
		}
		return h.Add(done)
	}
}

// Ops returns a copy of the history so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Close flushes the file.
func (h *History) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.w == nil {
		return nil
	}
	h.w.Flush()
	err := h.f.Close()
	h.w = nil
	return err
}

// ReadHistory loads a JSON-lines history (for --check).
func ReadHistory(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []Op
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("%s line %d: %v", path, len(ops)+1, err)
		}
		ops = append(ops, op)
	}
	return ops, sc.Err()
}

// reason boxes a reason code for an Op.
func reason(code int) *int { return &code }

// boolp boxes a bool.
func boolp(b bool) *bool { return &b }

// ms renders a history time in seconds for reports.
func secs(t int64) string { return fmt.Sprintf("%.3fs", float64(t)/1e9) }
