//! Turning memory-profile stacks into pprof Locations exactly as `runtime/pprof` does.
//!
//! [`LocationBuilder`] reproduces `profileBuilder.appendLocsForStack`, `pcDeck.tryAdd`,
//! `emitLocation` and `allFrames` of `src/runtime/pprof/proto.go`, and
//! [`LocationBuilder::append_heap_sample`] adds the `hideRuntime` retry of `writeHeapProto`
//! (`src/runtime/pprof/protomem.go`). Feed it the bucket stacks in the order the runtime would
//! (the `mbuckets` list order) so that Location and Function ids and the per-first-PC location
//! cache evolve identically.
//!
//! Addresses are *unrelocated* ELF virtual addresses (as [`Pclntab`] expects); the caller adds the
//! PIE load bias to [`Location::address`] when writing the profile.
//!
//! Version differences implemented (from the `GoVersion` of the [`Pclntab`]):
//! - Go 1.19: Functions are keyed by `Frame.Function` (the raw name; 1.19 has no
//!   `funcNameForPrint`) and have no start line; `tryAdd` compares `Frame.Function`.
//! - Go 1.21: Functions are keyed by `runtime_FrameSymbolName` (raw name with shapes) and carry
//!   `runtime_FrameStartLine`; `tryAdd` still compares the printed `Frame.Function`.
//! - Go 1.22+: `tryAdd` compares `runtime_FrameSymbolName`.
//! - Go 1.24+: `hideRuntime` also hides `internal/runtime/` frames.
//!
//! Where Go would panic ("stack too short to match cached location", only possible with
//! inconsistent input) the builder instead consumes the rest of the stack.

use std::collections::{HashMap, HashSet};

use crate::runtime::rules::VersionRules;
use crate::symbolize::pclntab::{Frame, Pclntab};

/// `lookupTried` of runtime/pprof: symbolization was attempted.
pub const LOOKUP_TRIED: u8 = 1;
/// `lookupFailed` of runtime/pprof: symbolization was attempted and failed.
pub const LOOKUP_FAILED: u8 = 2;

/// A pprof Function (`Profile.function`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// 1-based id in creation order.
    pub id: u64,
    /// `Function.name`: `runtime_FrameSymbolName` (Go 1.21+) / `Frame.Function` (Go 1.19).
    pub name: String,
    /// `Function.system_name`: identical to `name` in runtime/pprof.
    pub system_name: String,
    /// `Function.filename`: file of the first frame that created this function.
    pub filename: String,
    /// `Function.start_line` (0 for Go 1.19).
    pub start_line: i64,
}

/// A pprof Line (`Location.line`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Id of the [`Function`].
    pub function_id: u64,
    /// `Frame.Line`.
    pub line: i64,
}

/// A pprof Location (`Profile.location`), without its mapping id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based id in creation order.
    pub id: u64,
    /// PC of the first frame (ret-1 for return addresses), unrelocated.
    pub address: u64,
    /// Frames, innermost first.
    pub lines: Vec<Line>,
    /// OR of the [`LOOKUP_TRIED`]/[`LOOKUP_FAILED`] flags of every PC folded into this location;
    /// the runtime ORs this into the containing mapping to decide `has_functions` etc.
    pub symbolize_result: u8,
}

struct LocInfo {
    id: u64,
    pcs: Vec<u64>,
    first_pc_frames: Vec<Frame>,
    first_pc_symbolize_result: u8,
}

/// `profileBuilder.locs`: location info by its first PC. A map, with a small direct-mapped table of
/// recently found PCs in front of it: the PCs that every stack repeats then cost no SipHash, while
/// the map keeps its DoS-resistant hasher for PCs that come from the target (colliding PCs only
/// miss the table).
struct LocCache {
    infos: Vec<LocInfo>,
    index: HashMap<u64, usize>,
    /// (PC, index in `infos` + 1); 0 = empty.
    recent: Vec<(u64, usize)>,
}

const RECENT_SLOTS: usize = 1024;

impl Default for LocCache {
    fn default() -> Self {
        LocCache {
            infos: Vec::new(),
            index: HashMap::new(),
            recent: vec![(0, 0); RECENT_SLOTS],
        }
    }
}

impl LocCache {
    fn slot(pc: u64) -> usize {
        ((pc ^ (pc >> 10) ^ (pc >> 20)) as usize) & (RECENT_SLOTS - 1)
    }

    /// Number of distinct first PCs.
    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&mut self, pc: u64) -> Option<&LocInfo> {
        let slot = Self::slot(pc);
        let (p, i) = self.recent[slot];
        if i != 0 && p == pc {
            return self.infos.get(i - 1);
        }
        let &i = self.index.get(&pc)?;
        self.recent[slot] = (pc, i + 1);
        self.infos.get(i)
    }

    /// Sets the info of `pc` (replacing an earlier one, as a map insert does).
    fn insert(&mut self, pc: u64, info: LocInfo) {
        match self.index.get(&pc) {
            Some(&i) => self.infos[i] = info,
            None => {
                self.index.insert(pc, self.infos.len());
                self.infos.push(info);
            }
        }
    }
}

#[derive(Default)]
struct PcDeck {
    pcs: Vec<u64>,
    frames: Vec<Frame>,
    symbolize_result: u8,
    first_pc_frames: usize,
    first_pc_symbolize_result: u8,
}

impl PcDeck {
    fn reset(&mut self) {
        self.pcs.clear();
        self.frames.clear();
        self.symbolize_result = 0;
        self.first_pc_frames = 0;
        self.first_pc_symbolize_result = 0;
    }
}

/// Builds pprof Locations and Functions for a sequence of samples; see the module docs.
pub struct LocationBuilder<'t> {
    tab: &'t Pclntab,
    rules: VersionRules,
    locs: LocCache,
    funcs: HashMap<String, u64>,
    locations: Vec<Location>,
    functions: Vec<Function>,
    deck: PcDeck,
    /// [`LocationBuilder::is_runtime_pc`] by PC: the leading PCs of heap stacks (malloc's callers)
    /// repeat in nearly every sample.
    runtime_pcs: HashMap<u64, bool>,
    /// PCs for which [`LocationBuilder::all_frames`] is `None` (`runtime.goexit`, the outermost PC
    /// of nearly every stack): no location is cached for them, so each stack would symbolize it
    /// again.
    goexit_pcs: HashSet<u64>,
}

impl<'t> LocationBuilder<'t> {
    /// A builder emulating the pprof of `tab.go_version()`.
    pub fn new(tab: &'t Pclntab) -> Self {
        LocationBuilder {
            tab,
            rules: VersionRules::for_version(tab.go_version()),
            locs: LocCache::default(),
            funcs: HashMap::new(),
            locations: Vec::new(),
            functions: Vec::new(),
            deck: PcDeck::default(),
            runtime_pcs: HashMap::new(),
            goexit_pcs: HashSet::new(),
        }
    }

    /// Locations emitted so far, in id order (`locations()[i].id == i + 1`).
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// Functions emitted so far, in id order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// Consumes the builder, returning (locations, functions).
    pub fn finish(self) -> (Vec<Location>, Vec<Function>) {
        (self.locations, self.functions)
    }

    /// `writeHeapProto`'s per-record logic: hide leading runtime frames, build locations, and
    /// retry with all frames if that produced none. Returns the sample's location ids.
    pub fn append_heap_sample(&mut self, stack: &[u64]) -> Vec<u64> {
        let mut locs = Vec::new();
        let mut hide_runtime = true;
        for _ in 0..2 {
            let mut stk = stack;
            if hide_runtime {
                for (i, &addr) in stack.iter().enumerate() {
                    if self.is_runtime_pc(addr) {
                        continue;
                    }
                    stk = &stack[i..];
                    break;
                }
            }
            locs = self.append_locs_for_stack(stk);
            if !locs.is_empty() {
                break;
            }
            hide_runtime = false;
        }
        locs
    }

    fn is_runtime_pc(&mut self, addr: u64) -> bool {
        if let Some(&r) = self.runtime_pcs.get(&addr) {
            return r;
        }
        // FuncForPC(addr) != nil && name has a runtime prefix. A nil Func has name "" which never
        // matches, so the empty-name case needs no special handling.
        let name = self.tab.func_name_for_pc(addr);
        let r = name.starts_with("runtime.")
            || (self.rules.hide_internal_runtime && name.starts_with("internal/runtime/"));
        self.runtime_pcs.insert(addr, r);
        r
    }

    /// `allFrames(addr)`: frames for one return address, `None` for `runtime.goexit`.
    fn all_frames(&mut self, addr: u64) -> Option<(Vec<Frame>, u8)> {
        if self.goexit_pcs.contains(&addr) {
            return None;
        }
        let frames = self.tab.frames_for_pcs(&[addr]);
        let mut it = frames.into_iter();
        let mut frame = it.next().unwrap_or_default();
        if frame.function == "runtime.goexit" {
            self.goexit_pcs.insert(addr);
            return None;
        }
        let mut result = LOOKUP_TRIED;
        if frame.pc == 0 || frame.function.is_empty() || frame.file.is_empty() || frame.line == 0 {
            result |= LOOKUP_FAILED;
        }
        if frame.pc == 0 {
            frame.pc = addr.wrapping_sub(1);
        }
        let mut ret = vec![frame];
        for f in it {
            let stop = f.function == "runtime.goexit";
            ret.push(f);
            if stop {
                break;
            }
        }
        Some((ret, result))
    }

    /// `runtime_FrameSymbolName` for the name comparisons; 1.19 compares `Frame.Function`.
    fn symbol_name(&self, f: &Frame) -> String {
        symbol_name_of(&self.rules, f).to_owned()
    }

    fn try_add(&mut self, pc: u64, frames: &[Frame], symbolize_result: u8) -> bool {
        try_add(&mut self.deck, &self.rules, pc, frames, symbolize_result)
    }

    fn emit_location(&mut self) -> u64 {
        let Some(&addr) = self.deck.pcs.first() else {
            return 0;
        };
        let first_pc = self.deck.frames.first().map(|f| f.pc).unwrap_or(0);
        let id = self.locs.len() as u64 + 1;
        let first_frames =
            self.deck.frames[..self.deck.first_pc_frames.min(self.deck.frames.len())].to_vec();
        self.locs.insert(
            addr,
            LocInfo {
                id,
                pcs: self.deck.pcs.clone(),
                first_pc_frames: first_frames,
                first_pc_symbolize_result: self.deck.first_pc_symbolize_result,
            },
        );
        let frames = std::mem::take(&mut self.deck.frames);
        let mut lines = Vec::with_capacity(frames.len());
        for frame in &frames {
            let name = self.symbol_name(frame);
            let fid = match self.funcs.get(&name) {
                Some(&fid) => fid,
                None => {
                    let fid = self.funcs.len() as u64 + 1;
                    self.funcs.insert(name.clone(), fid);
                    self.functions.push(Function {
                        id: fid,
                        system_name: name.clone(),
                        name,
                        filename: frame.file.clone(),
                        start_line: if self.rules.pprof_symbol_names {
                            frame.start_line
                        } else {
                            0
                        },
                    });
                    fid
                }
            };
            lines.push(Line {
                function_id: fid,
                line: frame.line,
            });
        }
        self.locations.push(Location {
            id,
            address: first_pc,
            lines,
            symbolize_result: self.deck.symbolize_result,
        });
        self.deck.frames = frames;
        self.deck.reset();
        id
    }

    /// `appendLocsForStack(nil, stk)`: location ids (innermost first) for one stack of return
    /// addresses, creating locations as needed.
    pub fn append_locs_for_stack(&mut self, stk: &[u64]) -> Vec<u64> {
        self.deck.reset();
        let expanded = self.tab.expand_final_inline_frame(stk);
        // At most one location per PC.
        let mut locs = Vec::with_capacity(expanded.len());
        let mut stk: &[u64] = &expanded;
        while let Some(&addr) = stk.first() {
            if let Some(l) = self.locs.get(addr) {
                let (lid, npcs) = (l.id, l.pcs.len());
                if !self.deck.pcs.is_empty()
                    && try_add(
                        &mut self.deck,
                        &self.rules,
                        addr,
                        &l.first_pc_frames,
                        l.first_pc_symbolize_result,
                    )
                {
                    stk = &stk[1..];
                    continue;
                }
                let id = self.emit_location();
                if id > 0 {
                    locs.push(id);
                }
                locs.push(lid);
                stk = stk.get(npcs..).unwrap_or(&[]);
                continue;
            }
            let Some((frames, res)) = self.all_frames(addr) else {
                let id = self.emit_location();
                if id > 0 {
                    locs.push(id);
                }
                stk = &stk[1..];
                continue;
            };
            if self.try_add(addr, &frames, res) {
                stk = &stk[1..];
                continue;
            }
            let id = self.emit_location();
            if id > 0 {
                locs.push(id);
            }
            if let Some(l) = self.locs.get(addr) {
                locs.push(l.id);
                stk = stk.get(l.pcs.len()..).unwrap_or(&[]);
            } else {
                self.try_add(addr, &frames, res);
                stk = &stk[1..];
            }
        }
        let id = self.emit_location();
        if id > 0 {
            locs.push(id);
        }
        locs
    }
}

/// `runtime_FrameSymbolName` for the name comparisons; 1.19 compares `Frame.Function`.
fn symbol_name_of<'f>(rules: &VersionRules, f: &'f Frame) -> &'f str {
    if rules.pprof_symbol_names {
        &f.symbol_name
    } else {
        &f.function
    }
}

/// `pcDeck.tryAdd`: adds `pc` and its `frames` to the deck unless they start a new location.
fn try_add(
    deck: &mut PcDeck,
    rules: &VersionRules,
    pc: u64,
    frames: &[Frame],
    symbolize_result: u8,
) -> bool {
    if let (Some(last), Some(new_frame)) = (deck.frames.last(), frames.first()) {
        if last.has_func {
            return false;
        }
        if last.entry == 0 || new_frame.entry == 0 {
            return false;
        }
        if last.entry != new_frame.entry {
            return false;
        }
        let same = if rules.pcdeck_compares_symbol_names {
            symbol_name_of(rules, last) == symbol_name_of(rules, new_frame)
        } else {
            last.function == new_frame.function
        };
        if same {
            return false;
        }
    }
    deck.pcs.push(pc);
    deck.frames.extend_from_slice(frames);
    deck.symbolize_result |= symbolize_result;
    if deck.pcs.len() == 1 {
        deck.first_pc_frames = deck.frames.len();
        deck.first_pc_symbolize_result = symbolize_result;
    }
    true
}
