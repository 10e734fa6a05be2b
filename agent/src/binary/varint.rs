//! Unsigned LEB128 varints, as Go writes them in `.go.buildinfo` (`encoding/binary.Uvarint`) and in
//! `.gopclntab`'s pc-value tables (`runtime.readvarint`). The one decoder for both.

/// Decodes an unsigned varint of at most `max_bytes` bytes (10 for a `uint64`, 5 for a `uint32`)
/// from the start of `p`: `(bytes read, value)`. `None` when it runs off `p` or is longer than
/// `max_bytes` (valid Go output never is).
pub fn read_uvarint(p: &[u8], max_bytes: usize) -> Option<(usize, u64)> {
    let mut v = 0u64;
    for (i, &b) in p.iter().enumerate().take(max_bytes.min(10)) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((i + 1, v));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_bounds() {
        assert_eq!(read_uvarint(&[0x05], 5), Some((1, 5)));
        assert_eq!(read_uvarint(&[0x80, 0x01], 5), Some((2, 128)));
        assert_eq!(read_uvarint(&[0x80, 0x80], 5), None);
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0x0f], 5),
            Some((5, u32::MAX as u64))
        );
        assert_eq!(read_uvarint(&[0x80; 6], 5), None);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_uvarint(&max, 10), Some((10, u64::MAX)));
        assert_eq!(read_uvarint(&[], 10), None);
    }
}
