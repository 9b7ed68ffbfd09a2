package node

import (
	"testing"
	"time"
)

// A timedMap answers for keep after a put, and no longer.
func TestTimedMapForgetsAfterKeep(t *testing.T) {
	m := timedMap[string, uint64]{keep: 50 * time.Millisecond}
	m.put("a", 7)
	if !hasEpoch(&m, "a", 7) || hasEpoch(&m, "a", 8) || hasEpoch(&m, "b", 7) {
		t.Fatal("a put epoch not found as put")
	}
	if m.putNew("a", 9) {
		t.Fatal("putNew replaced a remembered key")
	}
	time.Sleep(60 * time.Millisecond)
	if _, ok := m.get("a"); ok {
		t.Fatal("remembered past keep")
	}
	if !m.putNew("a", 9) || !hasEpoch(&m, "a", 9) {
		t.Fatal("putNew did not put a forgotten key")
	}
}
