// Command coderef is the program whose stripped and unstripped builds ("twins") the coderef_twins
// test compares. It allocates, and reads its own heap profile through runtime/pprof so that the
// memory-profile reader (runtime.MemProfile / runtime.memProfileInternal) is linked in and the linker
// leaves memory profiling enabled.
package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime/pprof"
)

var sink [][]byte

func main() {
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 4096))
	}
	var profile bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&profile, 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(len(sink), profile.Len() > 0)
}
