package residency

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ReleaseExecutable drops the process's read-only mappings of its own
// executable from its resident set (madvise MADV_DONTNEED) and returns the
// bytes of address space released.
//
// In an executable with a PT_GNU_RELRO segment (position-independent or
// linked by the system linker), the dynamic loader wrote data into pages
// it then made read-only: dropping them would map back the file's
// unrelocated bytes. There only the executable (code) mappings, which no
// loader writes, are released.
func ReleaseExecutable() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("find the executable: %w", err)
	}
	relro, err := executableHasRelro()
	if err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, m := range ReadOnlyMappings(maps, exe) {
		if relro && !m.Exec {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, m.Start, m.End-m.Start, syscall.MADV_DONTNEED); e != 0 {
			return n, fmt.Errorf("madvise %#x-%#x: %w", m.Start, m.End, e)
		}
		n += int64(m.End - m.Start)
	}
	return n, nil
}

// executableHasRelro reads, once, whether the executable has a
// PT_GNU_RELRO segment.
var executableHasRelro = sync.OnceValues(func() (bool, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return false, fmt.Errorf("read the executable: %w", err)
	}
	defer f.Close()
	relro, err := HasRelro(f)
	if err != nil {
		return false, fmt.Errorf("read the executable's ELF program headers: %w", err)
	}
	return relro, nil
})

// ptGNURelro is the ELF program header type of the segment the dynamic
// loader makes read-only after relocating it.
const ptGNURelro = 0x6474e552

// HasRelro reports whether the ELF file r has a PT_GNU_RELRO program
// header. It reads the ELF header and at most 256 program headers. It
// does not use debug/elf, whose tables would add 164 KB to the agent's
// binary, which every opted-in pod runs, for these three fields.
func HasRelro(r io.ReaderAt) (bool, error) {
	var ident [16]byte
	if _, err := r.ReadAt(ident[:], 0); err != nil {
		return false, err
	}
	if string(ident[:4]) != "\x7fELF" {
		return false, errors.New("not an ELF file")
	}
	var bo binary.ByteOrder
	switch ident[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return false, fmt.Errorf("unknown ELF data encoding %d", ident[5])
	}
	// e_phoff, e_phentsize, e_phnum: their offsets for ELFCLASS32 and 64.
	var phoff int64
	var hdr [8]byte
	switch ident[4] {
	case 1:
		if _, err := r.ReadAt(hdr[:4], 28); err != nil {
			return false, err
		}
		phoff = int64(bo.Uint32(hdr[:4]))
		if _, err := r.ReadAt(hdr[:4], 42); err != nil {
			return false, err
		}
	case 2:
		if _, err := r.ReadAt(hdr[:8], 32); err != nil {
			return false, err
		}
		phoff = int64(bo.Uint64(hdr[:8]))
		if _, err := r.ReadAt(hdr[:4], 54); err != nil {
			return false, err
		}
	default:
		return false, fmt.Errorf("unknown ELF class %d", ident[4])
	}
	entsize, num := int64(bo.Uint16(hdr[:2])), int64(bo.Uint16(hdr[2:4]))
	if phoff <= 0 || entsize < 4 || num > 256 {
		return false, fmt.Errorf("program headers at %d, %d of %d bytes: not usable", phoff, num, entsize)
	}
	var typ [4]byte
	for i := range num {
		if _, err := r.ReadAt(typ[:], phoff+i*entsize); err != nil {
			return false, err
		}
		if bo.Uint32(typ[:]) == ptGNURelro {
			return true, nil
		}
	}
	return false, nil
}

// ReadOnlyMappings returns the mappings of file path in maps (the format of
// /proc/PID/maps) that cannot be written: private, readable, without "w".
// At most 64: an executable has a few.
func ReadOnlyMappings(maps []byte, path string) []Mapping {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Join(f[5:], " ") != path {
			continue
		}
		perms := f[1]
		if len(perms) != 4 || perms[1] == 'w' || perms[3] != 'p' || perms[0] != 'r' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, Mapping{Start: uintptr(start), End: uintptr(end), Exec: perms[2] == 'x'})
		if len(out) == 64 {
			break
		}
	}
	return out
}
