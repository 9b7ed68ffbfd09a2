package packet

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the generated fuzz seed corpus under testdata/fuzz")

// maxSeedLen keeps the committed corpus small: rows longer than this (the
// 65,535-level filter) are left out of it.
const maxSeedLen = 4096

// generatedSeeds derives the seed corpus of every fuzz target from the
// fixture table: target name → seed file name → arguments.
func generatedSeeds() map[string]map[string][]any {
	seeds := map[string]map[string][]any{
		"FuzzParseFixedHeader": {}, "FuzzDecode": {}, "FuzzDecodePublish": {}, "FuzzReader": {},
	}
	add := func(target string, args ...any) {
		name := fmt.Sprintf("seed-%03d", len(seeds[target]))
		seeds[target][name] = args
	}
	verByte := func(v Version) byte { return byte(v) - 3 } // inverse of fuzzVersion
	for _, f := range fixtures {
		if len(f.raw) > maxSeedLen {
			continue
		}
		add("FuzzParseFixedHeader", f.raw, uint32(fixtureLimits().MaxPacketSize))
		fh, n, err := ParseFixedHeader(f.raw, 0)
		if err != nil || n+fh.Remaining != len(f.raw) {
			continue
		}
		v := f.v
		if v == 0 {
			v = V311
		}
		add("FuzzDecode", f.raw[0], verByte(v), f.raw[n:])
		if fh.Type == PUBLISH {
			add("FuzzDecodePublish", fh.Flags, verByte(v), f.raw[n:])
		}
	}
	for _, ver := range []byte{0, 1} {
		v := V311
		if ver == 1 {
			v = V5
		}
		rows := readerRows(v)
		var all, good []byte
		for i, r := range rows {
			all = append(all, byte(i))
			if r.code == 0 {
				good = append(good, byte(i))
			}
			// Each row after a good one, in small chunks.
			add("FuzzReader", ver, []byte{0, byte(i)}, []byte{2, 0, 6})
		}
		add("FuzzReader", ver, good, []byte{})
		add("FuzzReader", ver, good, []byte{0})
		add("FuzzReader", ver|2, good, []byte{6, 0, 200, 0xFF})
		add("FuzzReader", ver, all, []byte{3})
	}
	return seeds
}

// encodeSeed writes arguments in the "go test fuzz v1" corpus format.
func encodeSeed(args []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch a := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", a)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", a)
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", a)
		default:
			panic(fmt.Sprintf("seed argument of type %T", a))
		}
	}
	return b.Bytes()
}

// TestSeedCorpus checks that the committed seed corpus is the one the
// fixture table generates; run with -update-seeds to rewrite it. Files not
// named seed-* (inputs a fuzzing run found) are left alone.
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range generatedSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
		for _, path := range old {
			if _, ok := seeds[filepath.Base(path)]; ok {
				continue
			}
			if *updateSeeds {
				os.Remove(path)
			} else {
				t.Errorf("%s is not generated any more; run go test ./broker/packet/ -run TestSeedCorpus -update-seeds", path)
			}
		}
		names := make([]string, 0, len(seeds))
		for name := range seeds {
			names = append(names, name)
		}
		sort.Strings(names)
		stale := 0
		for _, name := range names {
			path := filepath.Join(dir, name)
			want := encodeSeed(seeds[name])
			if *updateSeeds {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
				stale++
			}
		}
		if stale > 0 {
			t.Errorf("%s: %d seed files missing or stale; run go test ./broker/packet/ -run TestSeedCorpus -update-seeds",
				strings.TrimPrefix(dir, "testdata/"), stale)
		}
	}
}
