//! A fuzz input read as a stream of small choices.

/// Reads choices off the front of a fuzz input; past its end every read
/// gives zero, so any byte string is a valid (if short) program.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// Starts reading `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    /// Whether input remains.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Up to `n` more bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

/// The split points tried for an input of `len` bytes: every one for short
/// inputs, else 32 spread evenly plus both ends (each split re-decodes the
/// whole input, so this bounds the work per input).
pub fn split_points(len: usize) -> Vec<usize> {
    if len <= 48 {
        return (1..len).collect();
    }
    let mut v: Vec<usize> = (1..32).map(|i| i * len / 32).collect();
    v.extend([1, 2, len - 2, len - 1]);
    v.sort_unstable();
    v.dedup();
    v
}
