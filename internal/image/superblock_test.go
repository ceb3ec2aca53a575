package image

import (
	"encoding/binary"
	"errors"
	"testing"
)

// makeSuperblock returns a 1024-byte superblock with the given fields.
func makeSuperblock(blocksLo, blocksHi uint32, logBlockSize uint32, label string, is64 bool) []byte {
	b := make([]byte, superblockSize)
	le := binary.LittleEndian
	le.PutUint32(b[sbBlocksCountLo:], blocksLo)
	le.PutUint32(b[sbLogBlockSize:], logBlockSize)
	le.PutUint16(b[sbMagic:], ext4Magic)
	if is64 {
		le.PutUint32(b[sbFeatureInc:], incompat64Bit)
	}
	le.PutUint32(b[sbBlocksCountHi:], blocksHi)
	copy(b[sbVolumeName:sbVolumeName+volumeNameLen], label)
	return b
}

func TestParseSuperblock(t *testing.T) {
	t.Parallel()
	badMagic := makeSuperblock(1000, 0, 2, "x", false)
	badMagic[sbMagic] = 0x52
	tests := []struct {
		name      string
		in        []byte
		wantErr   error
		blockSize int64
		blocks    uint64
		label     string
	}{
		{name: "4k blocks", in: makeSuperblock(65536, 0, 2, "ferry-demo", true), blockSize: 4096, blocks: 65536, label: "ferry-demo"},
		{name: "1k blocks", in: makeSuperblock(8192, 0, 0, "", false), blockSize: 1024, blocks: 8192},
		{name: "64bit high blocks", in: makeSuperblock(0, 1, 2, "big", true), blockSize: 4096, blocks: 1 << 32, label: "big"},
		{name: "high blocks ignored without 64bit", in: makeSuperblock(10, 1, 2, "", false), blockSize: 4096, blocks: 10},
		{name: "16-char label", in: makeSuperblock(10, 0, 2, "0123456789abcdef", false), blockSize: 4096, blocks: 10, label: "0123456789abcdef"},
		{name: "bad magic", in: badMagic, wantErr: ErrNotExt4},
		{name: "short", in: make([]byte, 100), wantErr: ErrNotExt4},
		{name: "zeros", in: make([]byte, superblockSize), wantErr: ErrNotExt4},
		{name: "huge block size", in: makeSuperblock(10, 0, 7, "", false), wantErr: ErrNotExt4},
		{name: "no blocks", in: makeSuperblock(0, 0, 2, "", true), wantErr: ErrNotExt4},
		{name: "implausibly large", in: makeSuperblock(0, 0xffffffff, 6, "", true), wantErr: ErrNotExt4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := parseSuperblock(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("parseSuperblock() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseSuperblock() error = %v", err)
			}
			if sb.BlockSize != tc.blockSize || sb.Blocks != tc.blocks || sb.Label != tc.label {
				t.Errorf("parseSuperblock() = {%d %d %q}, want {%d %d %q}",
					sb.BlockSize, sb.Blocks, sb.Label, tc.blockSize, tc.blocks, tc.label)
			}
		})
	}
}

func FuzzParseSuperblock(f *testing.F) {
	f.Add(makeSuperblock(65536, 0, 2, "ferry-demo", true))
	f.Add(makeSuperblock(0, 1, 6, "", true))
	f.Add(makeSuperblock(1, 0, 0, "0123456789abcdef", false))
	f.Add(make([]byte, superblockSize))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := parseSuperblock(b)
		if err != nil {
			if !errors.Is(err, ErrNotExt4) {
				t.Fatalf("error %v does not match ErrNotExt4", err)
			}
			return
		}
		if sb.BlockSize < 1024 || sb.BlockSize > 65536 || sb.BlockSize&(sb.BlockSize-1) != 0 {
			t.Fatalf("block size %d", sb.BlockSize)
		}
		if sb.Blocks == 0 || sb.FSBytes() <= 0 || sb.FSBytes() > maxFilesystemSize {
			t.Fatalf("%d blocks, %d bytes", sb.Blocks, sb.FSBytes())
		}
		if len(sb.Label) > volumeNameLen {
			t.Fatalf("label of %d bytes", len(sb.Label))
		}
	})
}
