package mqclusterv1_test

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

var update = flag.Bool("update", false, "append new fields and enum values to testdata/fields.txt")

const fieldsFile = "testdata/fields.txt"

// TestFieldNumbersNeverReused compares every message field and enum value of
// this package with testdata/fields.txt, the record of every number ever
// used: "<full name> <number> <name> <kind>". A number in the record must
// still carry the same name and kind, or be reserved. A new field must be
// added to the record (go test -update appends it; it never deletes a line).
func TestFieldNumbersNeverReused(t *testing.T) {
	current := describe()
	recorded := readRecord(t)
	byKey := map[string]entry{}
	for _, e := range current {
		byKey[e.key()] = e
	}
	for _, r := range recorded {
		c, ok := byKey[r.key()]
		switch {
		case ok && (c.name != r.name || c.kind != r.kind):
			t.Errorf("%s number %d was %s (%s), is now %s (%s): numbers never change meaning",
				r.parent, r.number, r.name, r.kind, c.name, c.kind)
		case !ok && !r.reserved:
			t.Errorf("%s number %d (%s) is gone but not reserved: add `reserved %d;`",
				r.parent, r.number, r.name, r.number)
		}
	}
	known := map[string]bool{}
	for _, r := range recorded {
		known[r.key()] = true
	}
	var added []entry
	for _, c := range current {
		if !known[c.key()] {
			added = append(added, c)
		}
	}
	if len(added) == 0 {
		return
	}
	if !*update {
		for _, a := range added {
			t.Errorf("%s is not in %s: run go test -update ./proto/... and commit it", a, fieldsFile)
		}
		return
	}
	f, err := os.OpenFile(fieldsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, a := range added {
		if _, err := fmt.Fprintln(f, a); err != nil {
			t.Fatal(err)
		}
	}
}

type entry struct {
	parent   string // full name of the message or enum
	number   int
	name     string
	kind     string // field kind (message type for messages), "enum" for enum values
	reserved bool   // the number is reserved now (derived, not recorded)
}

func (e entry) key() string    { return fmt.Sprintf("%s %d", e.parent, e.number) }
func (e entry) String() string { return fmt.Sprintf("%s %d %s %s", e.parent, e.number, e.name, e.kind) }

var files = []protoreflect.FileDescriptor{
	pb.File_mqcluster_v1_command_proto,
	pb.File_mqcluster_v1_snapshot_proto,
	pb.File_mqcluster_v1_transport_proto,
}

// describe lists the fields and enum values of this package, sorted.
func describe() []entry {
	var out []entry
	for _, fd := range files {
		msgs := fd.Messages()
		for i := range msgs.Len() {
			m := msgs.Get(i)
			fields := m.Fields()
			for j := range fields.Len() {
				f := fields.Get(j)
				kind := f.Kind().String()
				if f.Message() != nil {
					kind = string(f.Message().FullName())
				}
				if f.Enum() != nil {
					kind = string(f.Enum().FullName())
				}
				if f.IsList() {
					kind = "repeated " + kind
				}
				out = append(out, entry{parent: string(m.FullName()), number: int(f.Number()), name: string(f.Name()), kind: kind})
			}
		}
		enums := fd.Enums()
		for i := range enums.Len() {
			e := enums.Get(i)
			values := e.Values()
			for j := range values.Len() {
				v := values.Get(j)
				out = append(out, entry{parent: string(e.FullName()), number: int(v.Number()), name: string(v.Name()), kind: "enum"})
			}
		}
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.key(), b.key()) })
	return out
}

// isReserved reports whether number is reserved in the message or enum named
// parent.
func isReserved(parent string, number int) bool {
	for _, fd := range files {
		if m := fd.Messages().ByName(protoreflect.FullName(parent).Name()); m != nil && string(m.FullName()) == parent {
			return m.ReservedRanges().Has(protoreflect.FieldNumber(number))
		}
		if e := fd.Enums().ByName(protoreflect.FullName(parent).Name()); e != nil && string(e.FullName()) == parent {
			return e.ReservedRanges().Has(protoreflect.EnumNumber(number))
		}
	}
	return false
}

func readRecord(t *testing.T) []entry {
	t.Helper()
	f, err := os.Open(fieldsFile)
	if os.IsNotExist(err) && *update {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var e entry
		var kind1, kind2 string
		n, _ := fmt.Sscan(text, &e.parent, &e.number, &e.name, &kind1, &kind2)
		switch {
		case n == 4:
			e.kind = kind1
		case n == 5 && kind1 == "repeated":
			e.kind = kind1 + " " + kind2
		default:
			t.Fatalf("%s:%d: malformed line %q", fieldsFile, line, text)
		}
		e.reserved = isReserved(e.parent, e.number)
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
