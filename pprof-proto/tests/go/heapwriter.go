// heapwriter allocates a known set of retained blocks with every allocation
// sampled (MemProfileRate = 1) and writes the runtime's own heap profile to
// the path given as its only argument. Standard library only.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
)

var retained [][]byte

//go:noinline
func allocateRetainedBlocks(n, size int) {
	for i := 0; i < n; i++ {
		retained = append(retained, make([]byte, size))
	}
}

func main() {
	runtime.MemProfileRate = 1
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: heapwriter OUT.pb.gz BLOCKS BLOCK_SIZE")
		os.Exit(2)
	}
	blocks, err1 := strconv.Atoi(os.Args[2])
	size, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "BLOCKS and BLOCK_SIZE must be integers")
		os.Exit(2)
	}
	retained = make([][]byte, 0, blocks)
	allocateRetainedBlocks(blocks, size)
	runtime.GC()
	f, err := os.Create(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runtime.KeepAlive(retained)
}
