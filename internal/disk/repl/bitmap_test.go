package repl

import (
	"path/filepath"
	"testing"
)

func TestBitmapPersists(t *testing.T) {
	t.Parallel()
	const rs = 4096
	const size = 100*rs + 100 // a short last region
	path := filepath.Join(t.TempDir(), "bm")
	b, err := OpenBitmap(path, size, rs)
	if err != nil {
		t.Fatal(err)
	}
	marks := []struct{ off, length int64 }{
		{0, 1},              // region 0
		{5*rs - 1, 2},       // regions 4 and 5
		{99 * rs, rs + 100}, // regions 99 and 100 (short)
		{5 * rs, 10},        // already dirty: no I/O
	}
	for _, m := range marks {
		if err := b.Mark(m.off, m.length); err != nil {
			t.Fatalf("Mark(%d, %d): %v", m.off, m.length, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b, err = OpenBitmap(path, size, rs)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer b.Close()
	var got []int
	for i := b.NextDirty(0); i >= 0; i = b.NextDirty(i + 1) {
		got = append(got, i)
	}
	want := []int{0, 4, 5, 99, 100}
	if len(got) != len(want) {
		t.Fatalf("dirty after reopen = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("dirty after reopen = %v, want %v", got, want)
		}
	}
	if d := b.DirtyBytes(); d != 4*rs+100 {
		t.Errorf("DirtyBytes() = %d, want %d", d, 4*rs+100)
	}
	if err := b.Clear(4); err != nil {
		t.Fatal(err)
	}
	if b.IsDirty(4) || b.Count() != 4 {
		t.Errorf("after Clear(4): IsDirty(4) = %v, Count() = %d; want false, 4", b.IsDirty(4), b.Count())
	}
	if _, err := OpenBitmap(path, size*2, rs); err == nil {
		t.Error("OpenBitmap with another disk size succeeded, want an error")
	}
}
