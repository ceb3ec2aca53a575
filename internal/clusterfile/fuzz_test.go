package clusterfile

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzReadGaneti checks that ReadGaneti never panics, fails only with an
// *Error, and that whatever it reads is valid and comes back equal through
// WriteGaneti and ReadGaneti.
func FuzzReadGaneti(f *testing.F) {
	for _, path := range goodFiles(f, "ganeti/*.txt") {
		f.Add(readFile(f, path))
	}
	f.Add([]byte(strings.Join(ganetiBase, "\n") + "\n"))
	var b bytes.Buffer
	if err := WriteGaneti(&b, sample()); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	for _, seed := range trickyGaneti {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ReadGaneti(bytes.NewReader(data))
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %q is a %T, not an *Error", err, err)
			}
			return
		}
		if err := Validate(s); err != nil {
			t.Fatalf("read an invalid snapshot: %v", err)
		}
		var out bytes.Buffer
		if err := WriteGaneti(&out, s); err != nil {
			t.Fatalf("cannot write what was read: %v", err)
		}
		again, err := ReadGaneti(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("cannot read what was written: %v\n%s", err, out.String())
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip changed the snapshot:\nread    %#v\nwritten %s\nreread  %#v", s, out.String(), again)
		}
	})
}

// FuzzReadSnapshot checks the same of ReadSnapshot and WriteSnapshot.
func FuzzReadSnapshot(f *testing.F) {
	for _, path := range append(goodFiles(f, "snapshot/*.json"), goodFiles(f, "ganeti/*.json")...) {
		f.Add(readFile(f, path))
	}
	var b bytes.Buffer
	if err := WriteSnapshot(&b, sample()); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte(`{"version":1,"nodes":[{"name":"a","labels":{"":"\u00e9"}}],"instances":[{"name":"i","primary":"a","tags":["x"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ReadSnapshot(bytes.NewReader(data))
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %q is a %T, not an *Error", err, err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteSnapshot(&out, s); err != nil {
			t.Fatalf("cannot write what was read: %v", err)
		}
		again, err := ReadSnapshot(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("cannot read what was written: %v\n%s", err, out.String())
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip changed the snapshot:\nread    %#v\nwritten %s\nreread  %#v", s, out.String(), again)
		}
	})
}

// trickyGaneti are files whose round trip is easy to get wrong.
var trickyGaneti = []string{
	// Exclusion prefixes that are not whole tags, tags matching two of
	// them, a group tag that is not the first tag, and location prefixes
	// given twice.
	"g|u|preferred||\n\n" +
		"a|1024|0|1024|1024|1024|1|N|u\nb|1024|0|1024|1024|1024|1|N|u\n\n" +
		"i1|1|1|1|running|Y|a|b|drbd|x,service:web,serv\n" +
		"i2|1|1|1|running|Y|b|a|drbd|servant\n" +
		"i3|1|1|1|running|Y|a||plain|service:w2,,\n" +
		"i4|1|1|1|running|Y|a||plain|service,other\n\n" +
		"htools:iextags:serv\nhtools:iextags:service:w\nhtools:iextags:\nhtools:nlocation:\nhtools:nlocation:zone:x\nhtools:nlocation:rack\n\n",
	// Node tags: repeated keys, empty keys, the group key, ferry's tag.
	"g|u|preferred||\n\n" +
		"a|1024|0|1024|1024|1024|1|N|u|1|group:x,rack:a,rack:b,:v,ferry:unschedulable,ferry:other,bare,bare:val,a:b:c\n\n\n\n",
	// drbd without a secondary, plain and shared disks with one, a node
	// of unknown size, offline nodes, an empty instances section.
	"g|u|preferred||\n\n" +
		"a|?|0|0|0|0|0|N|u\nb|2048|1024|0|0|-5|2|Y|u|1||N|1|2\nc|1024|0|1024|1024|1024|1|M|u\n\n" +
		"i1|1|1|1|USER_down|N|a||drbd|\ni2|1|1|1|running|Y|b|c|plain|\ni3|1|1|1|running|Y|c|a|rbd|\n\n\n",
	// Ratios: very small, very large, groups that disagree.
	"g|u|preferred||\nh|v|preferred||\n\n" +
		"a|1024|0|1024|1024|1024|1|N|u\nb|1024|0|1024|1024|1024|1|N|v\n\n\n\n" +
		"|1,1,1,1,1,1||drbd|0.000000000000000000000000000001|32\ng|1,1,1,1,1,1||drbd|1e300|0\nh|1,1,1,1,1,1|1,1,1,1,1,1;2,2,2,2,2,2|drbd|0x1p-2|1\n",
	// Capacities at the limit.
	"g|u|preferred||\n\n" +
		"a|1099511628288|512|0|1099511627776|0|1099511627777|N|u|1||N|1|1\n\n" +
		"i|1099511627776|1099511627776|1099511627776|running|Y|a||plain|\n\n\n",
}

// TestTrickyGaneti checks that the tricky seeds do read, so that the fuzz
// target's round trip runs on them (-v shows what they read as).
func TestTrickyGaneti(t *testing.T) {
	for i, seed := range trickyGaneti {
		s, err := ReadGaneti(strings.NewReader(seed))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		var b bytes.Buffer
		if err := WriteSnapshot(&b, s); err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %d:\n%s", i, b.String())
	}
}
