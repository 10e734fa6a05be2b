// Command manybuckets creates N distinct allocation stacks with
// runtime.MemProfileRate = 1, so its memory profile has about N buckets, for
// goheap's cycle-cost benchmark. Each stack is a path through a binary tree of
// calls: at depth d the bit d of the path index chooses branchA or branchB, so
// the return PCs differ for every index. After the first pass it writes -ready
// and keeps re-running every path from the same call site (records change, no
// new stacks).
//
// Flags: -n N (stacks, default 10000), -ready PATH, -pprof ADDR: serve net/http/pprof on ADDR
// (a 127.0.0.1 address; port 0 picks one), started before -ready is written, whose second line is
// then the address served (the first is the pid).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"time"
)

var sink []byte

func init() { runtime.MemProfileRate = 1 }

//go:noinline
func leaf() { sink = make([]byte, 64) }

//go:noinline
func branchA(depth int, path int) { step(depth, path) }

//go:noinline
func branchB(depth int, path int) { step(depth, path) }

//go:noinline
func step(depth int, path int) {
	if depth == 0 {
		leaf()
		return
	}
	if path>>(depth-1)&1 == 1 {
		branchA(depth-1, path)
	} else {
		branchB(depth-1, path)
	}
}

func main() {
	n := flag.Int("n", 10000, "distinct stacks")
	ready := flag.String("ready", "", "write the pid to `PATH` once all stacks exist")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on `ADDR` (127.0.0.1 only)")
	flag.Parse()
	if *n < 1 || *n > 1<<20 {
		fmt.Fprintln(os.Stderr, "manybuckets: -n must be in [1, 1048576]")
		os.Exit(1)
	}
	depth := 0
	for 1<<depth < *n {
		depth++
	}
	pass := func() {
		for p := 0; p < *n; p++ {
			step(depth, p)
		}
	}
	// One call site for pass: the stacks must be the same on every pass.
	for i := 0; ; i++ {
		pass()
		if i == 0 {
			runtime.GC()
			runtime.GC()
			served := servePprof(*pprofAddr)
			writeReady(*ready, served)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// servePprof serves http.DefaultServeMux (where net/http/pprof registers /debug/pprof/) on addr,
// which must be a 127.0.0.1 address, and returns the address it listens on ("" if addr is "").
func servePprof(addr string) string {
	if addr == "" {
		return ""
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		fmt.Fprintf(os.Stderr, "manybuckets: -pprof must be 127.0.0.1:PORT, not %q\n", addr)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		fmt.Fprintln(os.Stderr, http.Serve(l, nil))
		os.Exit(1)
	}()
	return l.Addr().String()
}

func writeReady(path, served string) {
	if path == "" {
		return
	}
	content := strconv.Itoa(os.Getpid()) + "\n"
	if served != "" {
		content += served + "\n"
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Rename(tmp, path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
