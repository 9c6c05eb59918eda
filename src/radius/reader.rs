//! A bounds-checked cursor over received bytes; every read can fail, none can panic.

/// Cursor over a byte slice with checked reads.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Reads one byte, or `None` at the end.
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        let b = self.array::<2>()?;
        Some(u16::from_be_bytes(b))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        let b = self.array::<4>()?;
        Some(u32::from_be_bytes(b))
    }

    /// Reads exactly `N` bytes into an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.take(N)?;
        bytes.try_into().ok()
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.rest.len() {
            return None;
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(head)
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;

    #[test]
    fn reads_fail_past_the_end_without_consuming() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None);
        assert_eq!(r.u8(), Some(3));
        assert!(r.is_empty());
        assert_eq!(r.take(1), None);
    }
}
