package fsm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestWaitApplied(t *testing.T) {
	h := newHarness(t)
	h.must(routeSet("n1", "a", "", 1))
	if err := h.f.WaitApplied(context.Background(), 1); err != nil {
		t.Fatalf("already applied: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- h.f.WaitApplied(context.Background(), 3) }()
	h.must(routeSet("n1", "b", "", 1))
	select {
	case err := <-done:
		t.Fatalf("returned at index 2: %v", err)
	default:
	}
	h.must(routeSet("n1", "c", "", 1))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitApplied did not return after index 3 was applied")
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- h.f.WaitApplied(ctx, 100) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v", err)
	}

	go func() { done <- h.f.WaitApplied(context.Background(), 100) }()
	h.f.Apply(&raft.Log{Index: 4, Type: raft.LogCommand, Data: []byte{0xff}})
	var fe *FatalError
	if err := <-done; !errors.As(err, &fe) {
		t.Errorf("after halting: %v, want the FatalError", err)
	}
}

// TestChanged: a watcher of one kind is woken by changes of that kind only,
// and not by an op that changes nothing.
func TestChanged(t *testing.T) {
	h := newHarness(t)
	routes, retained, anyCh := h.f.Changed(KindRoutes), h.f.Changed(KindRetained), h.f.Changed(KindAny)
	h.must(routeSet("n1", "a", "", 1))
	mustClosed(t, "routes", routes)
	mustClosed(t, "any", anyCh)
	mustOpen(t, "retained", retained)

	routes = h.f.Changed(KindRoutes)
	h.must(routeSet("n1", "a", "", 1)) // no change
	mustOpen(t, "routes after a no-op", routes)
	h.must(retainedSet("t", "p", 0))
	mustClosed(t, "retained", retained)
	mustOpen(t, "routes after a retained change", routes)

	// Restore changes everything.
	sessions := h.f.Changed(KindSessions)
	data := snapshotBytes(t, h.f)
	if err := h.f.Restore(readCloser(data)); err != nil {
		t.Fatal(err)
	}
	mustClosed(t, "sessions after restore", sessions)
	mustClosed(t, "routes after restore", routes)
}

func mustClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	default:
		t.Errorf("%s: not notified", what)
	}
}

func mustOpen(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
		t.Errorf("%s: notified", what)
	default:
	}
}
