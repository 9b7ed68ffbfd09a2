package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
)

// crashChildEnv, when set, makes TestCrashSafety the writer process: it
// commits to the store file named by the variable until it is killed.
const crashChildEnv = "MQCLUSTER_STORE_CRASH_CHILD"

// crashAcks is how many acknowledged commits the parent waits for before
// it kills the writer.
const crashAcks = 3000

// TestCrashSafety kills a writer with SIGKILL in the middle of its commits
// and checks that every commit whose done had reported success is in the
// file afterwards: done is only called after fsync.
func TestCrashSafety(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := tempPath(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]bool{}
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		// Each line is one write(2) of fewer than PIPE_BUF bytes, so it is
		// whole; the suffix guards against a torn one all the same.
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" || f[2] != "ok" {
			continue
		}
		seq, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		acked[seq] = true
		if len(acked) == crashAcks && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("writer stopped after %d acks before it was killed: %v\n%s", len(acked), err, stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != -1 {
		t.Fatalf("writer did not die by the signal: %v\n%s", err, stderr.String())
	}

	s := openAt(t, path, Options{})
	snap := load(t, s)
	if len(snap.Sessions) != 1 {
		t.Fatalf("%d sessions after the crash, want 1", len(snap.Sessions))
	}
	stored := map[uint64]bool{}
	for _, m := range snap.Sessions[0].Messages {
		if want := fmt.Sprintf("m-%d", m.Seq); string(m.Msg.Payload) != want {
			t.Fatalf("message %d has payload %q, want %q", m.Seq, m.Msg.Payload, want)
		}
		stored[m.Seq] = true
	}
	lost := 0
	for seq := range acked {
		if !stored[seq] {
			lost++
		}
	}
	t.Logf("%d commits acknowledged before the kill, %d stored, in %s", len(acked), len(stored), s.path)
	if lost > 0 {
		t.Fatalf("%d acknowledged commits lost", lost)
	}
	// The file takes writes again.
	mustCommit(t, s, putMessage("crash", storedMessage(1<<62, bareMessage("after"))))
}

// crashChild is the writer of TestCrashSafety. Eight goroutines commit one
// message each at a time, without waiting for done, and done prints an
// "ack" line per durable commit. It runs until killed, or exits after a
// minute if the parent forgot it.
func crashChild(path string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := Open(path, Options{})
	if err != nil {
		fail(err)
	}
	ready := make(chan error, 1)
	s.Commit([]broker.StoreOp{putSession(sessionRecord("crash"))}, func(err error) { ready <- err })
	if err := <-ready; err != nil {
		fail(err)
	}
	deadline := time.Now().Add(time.Minute)
	for g := range 8 {
		go func() {
			for i := uint64(0); time.Now().Before(deadline); i++ {
				seq := uint64(g)<<32 | i
				m := &broker.Message{Topic: "crash/t", Payload: []byte(fmt.Sprintf("m-%d", seq)), QoS: 1}
				s.Commit([]broker.StoreOp{putMessage("crash", &broker.StoredMessage{Seq: seq, PacketID: 1, QoS: 1, Msg: m})}, func(err error) {
					if err != nil {
						fail(err)
					}
					// Called by the committer: lines never interleave.
					_, _ = os.Stdout.WriteString("ack " + strconv.FormatUint(seq, 10) + " ok\n")
				})
			}
		}()
	}
	time.Sleep(time.Until(deadline))
	os.Exit(3)
}
