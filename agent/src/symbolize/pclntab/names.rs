//! Function names: the name table, and the way the runtime prints them (`funcNameForPrint`,
//! wrapper elision).

use super::*;

/// NUL-terminated string starting at `off` in `b` (bounded by the end of `b`).
pub(super) fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let s = b.get(off..)?;
    let n = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    s.get(..n)
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `funcNamePiecesForPrint` + concatenation (`funcNameForPrint`), per version: Go 1.21–1.26 replace
/// the outermost bracket pair; Go 1.27 also handles a generic method of a generic type.
pub fn func_name_for_print(name: &str, version: GoVersion) -> Cow<'_, str> {
    let rules = VersionRules::for_version(version);
    if !rules.print_generic_names {
        return Cow::Borrowed(name);
    }
    let b = name.as_bytes();
    let Some(i) = b.iter().position(|&c| c == b'[') else {
        return Cow::Borrowed(name);
    };
    // The runtime scans backwards for ']' and would fault if there is none; we return the name.
    let Some(j) = b.iter().rposition(|&c| c == b']') else {
        return Cow::Borrowed(name);
    };
    if j <= i {
        return Cow::Borrowed(name);
    }
    let head = &b[..i];
    let tail = &b[j + 1..];
    let interior = &b[i + 1..j];
    let simple = |mid: &[u8]| -> Cow<'_, str> {
        let mut v = Vec::with_capacity(head.len() + 5 + mid.len() + tail.len());
        v.extend_from_slice(head);
        v.extend_from_slice(b"[...]");
        v.extend_from_slice(mid);
        Cow::Owned(String::from_utf8_lossy(&v).into_owned())
    };
    if !rules.print_generic_methods || !interior.contains(&b'[') {
        return simple(tail);
    }
    let mut depth: i32 = 1;
    let (mut rbr, mut lbr): (isize, isize) = (-1, -1);
    for (k, &c) in interior.iter().enumerate() {
        // Go ranges over runes; '[' and ']' are ASCII so byte offsets agree.
        if c == b'[' {
            depth += 1;
            if depth != 1 {
                continue;
            }
            lbr = k as isize;
            break;
        }
        if c == b']' {
            depth -= 1;
            if depth < 0 {
                break;
            }
            if depth != 0 {
                continue;
            }
            rbr = k as isize;
        }
    }
    if depth == 1 {
        if rbr >= 0 && lbr > rbr {
            let mid = &interior[(rbr + 1) as usize..lbr as usize];
            let mut v = Vec::with_capacity(b.len());
            v.extend_from_slice(head);
            v.extend_from_slice(b"[...]");
            v.extend_from_slice(mid);
            v.extend_from_slice(b"[...]");
            v.extend_from_slice(tail);
            return Cow::Owned(String::from_utf8_lossy(&v).into_owned());
        }
        if rbr == -1 && lbr == -1 {
            return simple(tail);
        }
    }
    Cow::Borrowed(name)
}

impl Pclntab {
    /// `moduledata.funcName`: the runtime maps name offset 0 to "" (which hides the name of the
    /// first function of the table); see [`Pclntab::table_name_bytes`] for the stored name.
    pub(super) fn name_bytes(&self, name_off: i32) -> &[u8] {
        if name_off == 0 {
            return b"";
        }
        self.table_name_bytes(name_off)
    }

    /// The name stored at `name_off` in `funcnametab`, offset 0 included.
    pub(super) fn table_name_bytes(&self, name_off: i32) -> &[u8] {
        if name_off < 0 {
            return b"";
        }
        let (s, e) = self.funcnametab;
        let Some(t) = self.data.get(s..e) else {
            return b"";
        };
        cstr(t, name_off as usize).unwrap_or(b"")
    }

    pub(super) fn elide_wrapper_calling(&self, id: u8) -> bool {
        let ids = self.ids;
        !(Some(id) == ids.gopanic || Some(id) == ids.sigpanic || Some(id) == ids.panicwrap)
    }

    pub(super) fn is_wrapper(&self, id: u8) -> bool {
        Some(id) == self.ids.wrapper
    }

    pub(super) fn print_name(&self, raw: &[u8]) -> String {
        let s = String::from_utf8_lossy(raw);
        func_name_for_print(&s, self.rules.version).into_owned()
    }
}
