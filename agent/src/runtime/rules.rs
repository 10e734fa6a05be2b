//! Every version-dependent rule goheap follows, decided in one place: [`VersionRules::for_version`].
//!
//! Each field names the runtime source it reproduces and the release that introduced the behaviour.
//! Code elsewhere asks a [`VersionRules`] (never compares versions itself), so supporting a new Go
//! release means reading its runtime diff and adjusting this function and [`RuntimeLayout`] (see
//! `NEW_GO_VERSION.md`).

use crate::runtime::layout::RuntimeLayout;
use crate::runtime::version::GoVersion;

/// The rules of one Go release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionRules {
    pub version: GoVersion,
    /// `src/runtime/mprof.go`: the bucket and `memRecord` layout, and how records become values.
    pub layout: RuntimeLayout,
    /// `runtime/symtab.go` moduledata: 1.27 added `typedesclen`, `itaboffset`, `itabsize` before
    /// `gofunc` (the pclntab parser needs it to find the funcdata base).
    pub moduledata_has_typedesclen: bool,
    /// `runtime_expandFinalInlineFrame` walks the inline unwinder (1.20+; 1.19 used the old
    /// `pcdata` loop).
    pub expand_inline_with_unwinder: bool,
    /// `runtime.CallersFrames` elides inlined wrappers between an inlined frame and its caller
    /// (1.23+, `symtab.go` `Frames.Next`).
    pub frames_elide_inlined_wrappers: bool,
    /// `funcNameForPrint` replaces a generic instantiation's shape brackets by `[...]` (1.21+).
    pub print_generic_names: bool,
    /// `funcNamePiecesForPrint` also handles a generic method of a generic type (1.27+).
    pub print_generic_methods: bool,
    /// `runtime/pprof/proto.go`: functions carry `start_line` and names compare by
    /// `runtime_FrameSymbolName` (1.20+; 1.19 compares `Frame.Function`, start line 0).
    pub pprof_symbol_names: bool,
    /// `pcDeck.tryAdd` compares symbol names rather than `Frame.Function` (1.22+).
    pub pcdeck_compares_symbol_names: bool,
    /// `writeHeapProto`'s `hideRuntime` also hides leading `internal/runtime/` frames (1.24+).
    pub hide_internal_runtime: bool,
}

impl VersionRules {
    /// The rules for `v`. Versions outside the tested range get the nearest release's rules
    /// (`layout.tested` is then false and callers warn).
    pub fn for_version(v: GoVersion) -> VersionRules {
        VersionRules {
            version: v,
            layout: RuntimeLayout::for_version(&v),
            moduledata_has_typedesclen: v.at_least(27),
            expand_inline_with_unwinder: v.at_least(20),
            frames_elide_inlined_wrappers: v.at_least(23),
            print_generic_names: v.at_least(21),
            print_generic_methods: v.at_least(27),
            pprof_symbol_names: v.at_least(20),
            pcdeck_compares_symbol_names: v.at_least(22),
            hide_internal_runtime: v.at_least(24),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_releases() {
        let r = |m| VersionRules::for_version(GoVersion::new(1, m));
        assert!(!r(19).pprof_symbol_names && r(20).pprof_symbol_names);
        assert!(!r(21).pcdeck_compares_symbol_names && r(22).pcdeck_compares_symbol_names);
        assert!(!r(22).frames_elide_inlined_wrappers && r(23).frames_elide_inlined_wrappers);
        assert!(!r(23).hide_internal_runtime && r(24).hide_internal_runtime);
        assert!(!r(26).print_generic_methods && r(27).print_generic_methods);
        assert!(!r(26).moduledata_has_typedesclen && r(27).moduledata_has_typedesclen);
        assert!(r(27).layout.object_size_records && !r(26).layout.object_size_records);
    }
}
