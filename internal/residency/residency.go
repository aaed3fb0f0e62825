// Package residency gives back the pages of a long-idle process's own
// executable: the refresh sidecar sleeps for minutes between refreshes,
// and the code and read-only data it ran at start (the TLS stack, the SDK,
// the first write) need not stay in its resident set meanwhile.
//
// Only read-only mappings of the executable file are released: their
// pages are clean copies of the file, kept in the node's page cache (shared
// with every container running the same image) and mapped back on the next
// access, the way they were mapped at start. Writable mappings (the data
// and bss sections, the heap) are never touched, nor, in an executable the
// dynamic loader relocated (PT_GNU_RELRO), the read-only data it wrote.
package residency

// Mapping is one line of /proc/self/maps that ReleaseExecutable releases.
type Mapping struct {
	Start, End uintptr
	// Exec: the mapping is executable (code).
	Exec bool
}
