// Command symoracle is the test oracle for goheap's pclntab emulation. It runs code that mixes
// inlined functions, methods, wrappers, closures, generics and deep recursion, records
// runtime.Callers stacks and memory-profile stacks along the way, and prints (as JSON) what the
// Go runtime itself answers for those PCs. It also writes the runtime's own heap profile (pprof
// protobuf) for the recorded memory-profile records.
//
// Usage: symoracle <heap-profile-output-path>
package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
)

func init() { runtime.MemProfileRate = 1 }

var (
	stacks [][]uintptr
	sink   [][]byte
	total  int
)

//go:noinline
func record() {
	pcs := make([]uintptr, 1024)
	n := runtime.Callers(1, pcs)
	stacks = append(stacks, pcs[:n])
}

// leaf and mid are small enough to be inlined into their callers.
func leaf(x int) int {
	if x%7 == 3 {
		record()
		sink = append(sink, make([]byte, 16+x))
	}
	return x + 1
}

func mid(x int) int { return leaf(x) * 2 }

//go:noinline
func loopInlined(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += mid(i)
	}
	return s
}

type Shape interface{ Area() int }

type Rect struct{ w, h int }

// Area has a value receiver; calling it through an interface holding *Rect goes through the
// compiler-generated wrapper (*Rect).Area.
func (r Rect) Area() int {
	record()
	sink = append(sink, make([]byte, r.w*r.h))
	return r.w * r.h
}

type Named struct{ Rect } // promoted method: another wrapper

type Counter struct{ n int }

//go:noinline
func (c *Counter) Inc() {
	c.n++
	if c.n%3 == 0 {
		record()
		sink = append(sink, make([]byte, 48))
	}
}

type Box[T any] struct{ v T }

//go:noinline
func (b *Box[T]) Get() T {
	record()
	sink = append(sink, make([]byte, 40))
	return b.v
}

func (b *Box[T]) Peek() T { // inlinable generic method
	record()
	return b.v
}

//go:noinline
func Map[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

type Pair[K comparable, V any] struct {
	k K
	v V
}

//go:noinline
func (p Pair[K, V]) Method2() V {
	record()
	sink = append(sink, make([]byte, 24))
	return p.v
}

//go:noinline
func recurse(n int) int {
	if n == 0 {
		record()
		return 0
	}
	return recurse(n-1) + 1
}

// recurseInl recurses through an inlined step, so each level carries an inline frame.
//
//go:noinline
func recurseInl(n int) int {
	if n == 0 {
		record()
		sink = append(sink, make([]byte, 72))
		return 0
	}
	return step(n)
}

func step(n int) int { return recurseInl(n-1) + 1 }

func closures() int {
	x := 0
	f := func() {
		x++
		g := func() {
			record()
			sink = append(sink, make([]byte, 56))
		}
		g()
	}
	for i := 0; i < 2; i++ {
		f()
	}
	h := func(y int) int { return mid(y) } // inlined closure calling inlined funcs
	return x + h(3)
}

func work() {
	total += loopInlined(20)
	var s Shape = &Rect{2, 3}
	total += s.Area()
	s = Named{Rect{1, 5}}
	total += s.Area()
	s = &Named{Rect{3, 3}}
	total += s.Area()
	c := &Counter{}
	for i := 0; i < 6; i++ {
		c.Inc()
	}
	bi := &Box[int]{7}
	total += bi.Get() + bi.Peek()
	bs := &Box[string]{"x"}
	total += len(bs.Get()) + len(bs.Peek())
	bp := &Box[*Rect]{&Rect{1, 1}}
	total += bp.Get().w
	strs := Map([]int{1, 2}, func(i int) string { record(); return strconv.Itoa(i) })
	total += len(strs)
	total += len(Pair[string, []int]{"a", []int{1}}.Method2())
	total += recurse(150)
	total += recurseInl(12)
	total += recurseInl(40)
	total += closures()
	done := make(chan struct{})
	go func() {
		record()
		sink = append(sink, make([]byte, 88))
		close(done)
	}()
	<-done
}

type jsonFrame struct {
	PC       uint64 `json:"pc"`
	FuncNil  bool   `json:"func_nil"`
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Entry    uint64 `json:"entry"`
	More     bool   `json:"more"`
}

type jsonPC struct {
	PC           uint64      `json:"pc"`
	FuncForPC    string      `json:"func_for_pc"`
	FuncForPCNil bool        `json:"func_for_pc_nil"`
	FuncEntry    uint64      `json:"func_entry"`
	Frames       []jsonFrame `json:"frames"`
}

type output struct {
	GoVersion  string        `json:"go_version"`
	GoArch     string        `json:"goarch"`
	Exe        string        `json:"exe"`
	LoadBias   uint64        `json:"load_bias"`
	Stacks     [][]uint64    `json:"stacks"`
	Frames     [][]jsonFrame `json:"frames"`
	PhysStacks [][]uint64    `json:"phys_stacks"`
	PhysFrames [][]jsonFrame `json:"phys_frames"`
	PCs        []jsonPC      `json:"pcs"`
	MemRecords [][]uint64    `json:"mem_records"`
}

func framesOf(pcs []uintptr) []jsonFrame {
	var out []jsonFrame
	fr := runtime.CallersFrames(pcs)
	for {
		f, more := fr.Next()
		if f.PC == 0 && f.Function == "" && !more {
			break
		}
		out = append(out, jsonFrame{uint64(f.PC), f.Func == nil, f.Function, f.File, f.Line, uint64(f.Entry), more})
		if !more {
			break
		}
	}
	return out
}

// loadBias returns the difference between run-time and link-time addresses of the executable.
func loadBias(exe string) uint64 {
	ef, err := elf.Open(exe)
	if err != nil {
		panic(err)
	}
	defer ef.Close()
	var vaddr uint64
	found := false
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			vaddr, found = p.Vaddr, true
			break
		}
	}
	if !found {
		panic("no PT_LOAD at offset 0")
	}
	mf, err := os.Open("/proc/self/maps")
	if err != nil {
		panic(err)
	}
	defer mf.Close()
	sc := bufio.NewScanner(mf)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || fields[2] != "00000000" {
			continue
		}
		start, err := strconv.ParseUint(strings.SplitN(fields[0], "-", 2)[0], 16, 64)
		if err != nil {
			panic(err)
		}
		return start - vaddr&^0xfff
	}
	panic("executable mapping not found in /proc/self/maps")
}

func memRecords() []runtime.MemProfileRecord {
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs := make([]runtime.MemProfileRecord, n+50)
		var ok bool
		n, ok = runtime.MemProfile(recs, true)
		if ok {
			return recs[:n]
		}
	}
}

func sameStacks(a, b []runtime.MemProfileRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Stack0 != b[i].Stack0 {
			return false
		}
	}
	return true
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: symoracle <heap-profile-path>")
		os.Exit(2)
	}
	work()
	runtime.MemProfileRate = 0 // no new buckets from here on
	runtime.GC()
	runtime.GC()

	// The heap profile must be written from exactly the records we report. A bucket can still be
	// published by a late GC cycle, so retry until the records before and after agree.
	var recs []runtime.MemProfileRecord
	var prof bytes.Buffer
	for attempt := 0; ; attempt++ {
		before := memRecords()
		prof.Reset()
		if err := pprof.Lookup("heap").WriteTo(&prof, 0); err != nil {
			panic(err)
		}
		recs = memRecords()
		if sameStacks(before, recs) {
			break
		}
		if attempt == 10 {
			panic("memory profile kept changing")
		}
		runtime.GC()
	}
	if err := os.WriteFile(os.Args[1], prof.Bytes(), 0o644); err != nil {
		panic(err)
	}

	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	out := output{GoVersion: runtime.Version(), GoArch: runtime.GOARCH, Exe: exe, LoadBias: loadBias(exe)}
	seen := map[uintptr]bool{}
	addPC := func(pc uintptr) {
		if seen[pc] {
			return
		}
		seen[pc] = true
		j := jsonPC{PC: uint64(pc), Frames: framesOf([]uintptr{pc})}
		if f := runtime.FuncForPC(pc); f != nil {
			j.FuncForPC, j.FuncEntry = f.Name(), uint64(f.Entry())
		} else {
			j.FuncForPCNil = true
		}
		out.PCs = append(out.PCs, j)
	}
	for _, s := range stacks {
		var u []uint64
		for _, pc := range s {
			u = append(u, uint64(pc))
			addPC(pc)
		}
		out.Stacks = append(out.Stacks, u)
		out.Frames = append(out.Frames, framesOf(s))
		// Real PCs only (as printed in tracebacks): exercises the virtual-PC insertion of 1.23+.
		var phys []uintptr
		for i, pc := range s {
			if i > 0 && runtime.FuncForPC(pc-1).Entry() == runtime.FuncForPC(s[i-1]-1).Entry() {
				continue
			}
			phys = append(phys, pc)
		}
		var u2 []uint64
		for _, pc := range phys {
			u2 = append(u2, uint64(pc))
		}
		out.PhysStacks = append(out.PhysStacks, u2)
		out.PhysFrames = append(out.PhysFrames, framesOf(phys))
	}
	for _, r := range recs {
		var u []uint64
		for _, pc := range r.Stack() {
			u = append(u, uint64(pc))
			addPC(pc)
		}
		out.MemRecords = append(out.MemRecords, u)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
