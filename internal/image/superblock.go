package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNotExt4 means a file has no ext2/3/4 superblock: it is not an image
// ferry can boot.
var ErrNotExt4 = errors.New("image: no ext4 superblock")

// ErrTruncated means an image file is shorter than the filesystem it holds,
// typically a copy or download that stopped early.
var ErrTruncated = errors.New("image: truncated")

// Layout of the ext4 superblock (see the kernel's fs/ext4/ext4.h): it starts
// 1024 bytes into the filesystem and is 1024 bytes long. Offsets are
// relative to its start.
const (
	superblockOffset = 1024
	superblockSize   = 1024

	sbBlocksCountLo = 0x04
	sbLogBlockSize  = 0x18
	sbMagic         = 0x38
	sbFeatureInc    = 0x60
	sbUUID          = 0x68
	sbVolumeName    = 0x78
	sbBlocksCountHi = 0x150

	ext4Magic         = 0xEF53
	incompat64Bit     = 0x80
	maxLogBlockSize   = 6 // 1024 << 6 = 64 KiB, the largest ext4 block
	minBlockSize      = 1024
	volumeNameLen     = 16
	maxFilesystemSize = 1 << 60 // ext4's 2^48 blocks of 64 KiB exceed int64 otherwise
)

// superblock is what Inspect needs from an ext4 superblock.
type superblock struct {
	BlockSize int64
	Blocks    uint64
	Label     string
	UUID      [16]byte
}

// FSBytes is the size of the filesystem in bytes.
func (s superblock) FSBytes() int64 { return int64(s.Blocks) * s.BlockSize }

// parseSuperblock decodes the 1024-byte ext4 superblock b (the bytes at
// offset 1024 of an image). It checks the magic number and that block size
// and block count are plausible; it returns an error matching ErrNotExt4
// otherwise.
func parseSuperblock(b []byte) (superblock, error) {
	var sb superblock
	if len(b) < superblockSize {
		return sb, fmt.Errorf("%w: superblock is %d bytes, want %d", ErrNotExt4, len(b), superblockSize)
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[sbMagic:]); m != ext4Magic {
		return sb, fmt.Errorf("%w: magic is %#04x, want %#04x", ErrNotExt4, m, ext4Magic)
	}
	logBS := le.Uint32(b[sbLogBlockSize:])
	if logBS > maxLogBlockSize {
		return sb, fmt.Errorf("%w: block size 1024<<%d is too large", ErrNotExt4, logBS)
	}
	sb.BlockSize = minBlockSize << logBS
	sb.Blocks = uint64(le.Uint32(b[sbBlocksCountLo:]))
	if le.Uint32(b[sbFeatureInc:])&incompat64Bit != 0 {
		sb.Blocks |= uint64(le.Uint32(b[sbBlocksCountHi:])) << 32
	}
	if sb.Blocks == 0 {
		return sb, fmt.Errorf("%w: block count is 0", ErrNotExt4)
	}
	if sb.Blocks > maxFilesystemSize/uint64(sb.BlockSize) {
		return sb, fmt.Errorf("%w: %d blocks of %d bytes is implausibly large", ErrNotExt4, sb.Blocks, sb.BlockSize)
	}
	copy(sb.UUID[:], b[sbUUID:sbUUID+16])
	name := b[sbVolumeName : sbVolumeName+volumeNameLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	sb.Label = string(name)
	return sb, nil
}
