// Command noprof never reads a memory profile, so the Go linker sets
// runtime.disableMemoryProfiling and drops the memory-profile reader. The coderef_twins test checks
// that recovery still works (with weaker evidence) and identifies the linker-set flag.
package main

import "fmt"

var sink [][]byte

func main() {
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 4096))
	}
	fmt.Println(len(sink))
}
