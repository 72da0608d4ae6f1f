//! Owns the dirty-block bitmap handed to an incremental backup: which fixed-size blocks of
//! a file changed since the previous backup. The VMM produces and persists it; we only read it.

use serde::{Deserialize, Serialize};

/// Blocks written since the previous backup, one bit per `block_size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirtyBlocks {
    /// Bytes per block (4 MiB for disks).
    pub block_size: u64,
    /// Number of blocks covered.
    pub blocks: u64,
    /// Bits, block `i` is bit `i % 64` of word `i / 64`.
    pub words: Vec<u64>,
}

impl DirtyBlocks {
    /// An all-clean bitmap for a file of `file_size` bytes.
    pub fn new(block_size: u64, file_size: u64) -> Self {
        let block_size = block_size.max(1);
        let blocks = file_size.div_ceil(block_size);
        DirtyBlocks {
            block_size,
            blocks,
            words: vec![0; blocks.div_ceil(64) as usize],
        }
    }

    /// Marks every block touched by `offset..offset+len` dirty.
    pub fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 || !self.is_well_formed() {
            return;
        }
        let first = offset / self.block_size;
        let last = offset.saturating_add(len - 1) / self.block_size;
        for b in first..=last.min(self.blocks.saturating_sub(1)) {
            self.words[(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    /// Whether any block touched by `offset..offset+len` is dirty (or outside the bitmap).
    pub fn any_dirty(&self, offset: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        if self.block_size == 0 {
            return true;
        }
        let first = offset / self.block_size;
        let last = offset.saturating_add(len - 1) / self.block_size;
        (first..=last).any(|b| {
            b >= self.blocks
                || self
                    .words
                    .get((b / 64) as usize)
                    .is_none_or(|w| w & (1 << (b % 64)) != 0)
        })
    }

    /// Whether the bitmap is consistent with itself (enough words for its blocks).
    pub fn is_well_formed(&self) -> bool {
        self.block_size > 0 && self.words.len() as u64 >= self.blocks.div_ceil(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marking_a_range_dirties_exactly_the_blocks_it_touches() {
        let mut d = DirtyBlocks::new(4, 40);
        d.mark(5, 4);
        assert!(!d.any_dirty(0, 4));
        assert!(d.any_dirty(4, 4));
        assert!(d.any_dirty(8, 1));
        assert!(!d.any_dirty(12, 28));
        assert!(d.any_dirty(40, 1), "outside the bitmap counts as dirty");
    }

    #[test]
    fn a_malformed_bitmap_counts_as_all_dirty_instead_of_panicking() {
        let d = DirtyBlocks {
            block_size: 0,
            blocks: 10,
            words: vec![],
        };
        assert!(!d.is_well_formed());
        assert!(d.any_dirty(0, 1));
        let mut short = DirtyBlocks {
            block_size: 4,
            blocks: 1000,
            words: vec![0],
        };
        short.mark(u64::MAX - 1, 2);
        assert!(short.any_dirty(900 * 4, 4));
    }
}
