package topic

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The benchmark trie: 1,000,000 filters of five-level topics drawn from a
// seeded generator over a small vocabulary per level, so that a typical topic
// matches a handful of them (see BenchmarkMatch1M's matches/op):
//
//	~70% exact filters     w3/w12/w7/w30/w1
//	~20% one '+' level     w3/+/w7/w30/w1
//	~10% ending in '#'     w3/w12/w7/w30/#   (mostly after four levels)
//
// Each filter has its own subscriber id; equal filters from the generator
// simply hold several subscribers.
const benchFilters = 1_000_000

// benchVocab is the number of words per level: 8*16*32*32*32 = 4.2M topics.
var benchVocab = [5]int{8, 16, 32, 32, 32}

var benchWords = func() (w [5][]string) {
	for l, n := range benchVocab {
		for i := range n {
			w[l] = append(w[l], fmt.Sprintf("l%dw%d", l, i))
		}
	}
	return w
}()

type benchGen struct{ r *rand.Rand }

func newBenchGen(seed uint64) benchGen { return benchGen{rand.New(rand.NewPCG(seed, 0x6d7163))} }

// levels fills lv with a random five-level topic.
func (g benchGen) levels(lv *[5]string) {
	for l := range lv {
		lv[l] = benchWords[l][g.r.IntN(benchVocab[l])]
	}
}

func (g benchGen) topic() string {
	var lv [5]string
	g.levels(&lv)
	return strings.Join(lv[:], "/")
}

// filter draws one filter with the mix described above.
func (g benchGen) filter() string {
	var lv [5]string
	g.levels(&lv)
	switch p := g.r.IntN(100); {
	case p < 70:
		return strings.Join(lv[:], "/")
	case p < 90:
		lv[g.r.IntN(5)] = "+"
		return strings.Join(lv[:], "/")
	default:
		// '#' after four levels mostly; shorter prefixes are rare, as each
		// matches a large share of all topics.
		depth := 4
		switch q := g.r.IntN(1000); {
		case q < 1:
			depth = 2
		case q < 50:
			depth = 3
		}
		return strings.Join(lv[:depth], "/") + "/#"
	}
}

var bench1M struct {
	once   sync.Once
	trie   *Trie[byte]
	topics []string // topics that subscribers exist for, as publishers use them
	heapMB float64  // live heap the trie takes, subscriber ids included
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func benchTrie(b *testing.B) (*Trie[byte], []string) {
	bench1M.once.Do(func() {
		before := liveHeap()
		g := newBenchGen(1)
		t := New[byte]()
		var topics []string
		for i := range benchFilters {
			f := g.filter()
			t.Add(f, "", fmt.Sprintf("client-%07d", i), 1)
			if i%512 == 0 && !strings.ContainsAny(f, "+#") {
				topics = append(topics, f)
			}
		}
		bench1M.trie, bench1M.topics = t, topics
		bench1M.heapMB = float64(liveHeap()-before) / (1 << 20)
	})
	if bench1M.trie.Len() != benchFilters {
		b.Fatalf("benchmark trie has %d entries, want %d", bench1M.trie.Len(), benchFilters)
	}
	return bench1M.trie, bench1M.topics
}

func BenchmarkMatch1M(b *testing.B) {
	t, topics := benchTrie(b)
	dst := make([]Entry[byte], 0, 1024)
	matches := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		dst = t.Match(topics[i%len(topics)], dst[:0])
		matches += len(dst)
	}
	b.ReportMetric(float64(matches)/float64(b.N), "matches/op")
	b.ReportMetric(bench1M.heapMB, "trie-MiB")
}

// Topics nobody subscribed to exactly: only wildcard filters can match.
func BenchmarkMatch1MRandomTopic(b *testing.B) {
	t, _ := benchTrie(b)
	g := newBenchGen(2)
	topics := make([]string, 4096)
	for i := range topics {
		topics[i] = g.topic()
	}
	dst := make([]Entry[byte], 0, 1024)
	matches := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		dst = t.Match(topics[i%len(topics)], dst[:0])
		matches += len(dst)
	}
	b.ReportMetric(float64(matches)/float64(b.N), "matches/op")
}

func BenchmarkHasMatch1M(b *testing.B) {
	t, topics := benchTrie(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if !t.HasMatch(topics[i%len(topics)]) {
			b.Fatal("no match for a subscribed topic")
		}
	}
}

// benchKeys are the keys BenchmarkSubscribe and BenchmarkUnsubscribe add to
// and remove from the 1M trie: 4096 distinct filters from the same generator
// and 1024 subscriber ids not in the trie, so every Add inserts and every
// Remove deletes. Key i is (benchNewFilters[i%4096], benchSubs[i/4096%1024]):
// 4M distinct keys.
var benchNewFilters, benchSubs = func() (fs, subs []string) {
	g := newBenchGen(3)
	seen := map[string]bool{}
	for len(fs) < 4096 {
		if f := g.filter(); !seen[f] {
			seen[f] = true
			fs = append(fs, f)
		}
	}
	for i := range 1024 {
		subs = append(subs, fmt.Sprint("bench-", i))
	}
	return fs, subs
}()

func benchKey(i int) (filter, sub string) {
	return benchNewFilters[i%len(benchNewFilters)], benchSubs[i/len(benchNewFilters)%len(benchSubs)]
}

func BenchmarkSubscribe(b *testing.B) {
	t, _ := benchTrie(b)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		f, s := benchKey(n)
		t.Add(f, "", s, 1)
		n++
	}
	b.StopTimer()
	for i := range n {
		f, s := benchKey(i)
		t.Remove(f, "", s)
	}
}

func BenchmarkUnsubscribe(b *testing.B) {
	t, _ := benchTrie(b)
	n := b.N
	for i := range n {
		f, s := benchKey(i)
		t.Add(f, "", s, 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range n {
		f, s := benchKey(i)
		if removed, _ := t.Remove(f, "", s); !removed {
			b.Fatalf("Remove(%q, %q) removed nothing", f, s)
		}
	}
}

func BenchmarkValidateFilter(b *testing.B) {
	filter := "sport/tennis/+/player1/#"
	b.ReportAllocs()
	for b.Loop() {
		if ValidateFilter(filter, 128) != nil {
			b.Fatal("rejected")
		}
	}
}

// BAD-INPUT row 14: 65,535 separators are refused at the 129th level.
func BenchmarkValidateFilter65535Levels(b *testing.B) {
	filter := strings.Repeat("/", 65535)
	b.ReportAllocs()
	for b.Loop() {
		if ValidateFilter(filter, 128) == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkMatchFunc(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !Match("sport/+/player1/#", "sport/tennis/player1/score/wimbledon") {
			b.Fatal("no match")
		}
	}
}
