//! The contract between NovaCron's guests (the freestanding test guest and the Linux
//! guest agent) and the host side that checks them (tests, benches, hostd).
//!
//! `no_std`, no allocation, no floating point, and only word-sized arithmetic, so the
//! test guest can run it under KVM's instruction emulator. It owns the formats that
//! both sides must compute identically: the checksummed disk block, the dirty-page
//! pattern and the console line keys. It does not own any I/O.
#![no_std]

/// Size of one checksummed disk block.
pub const BLOCK_SIZE: usize = 4096;
/// Words (u64) in one block.
pub const BLOCK_WORDS: usize = BLOCK_SIZE / 8;
/// Blocks `0..HOST_BLOCKS` of the first disk are written by the host and read by the guest.
pub const HOST_BLOCKS: u64 = 16;
/// First block the guest's `disk` workload writes.
pub const GUEST_BLOCKS_START: u64 = HOST_BLOCKS;
/// Blocks the guest's `disk` workload writes and verifies each pass.
pub const GUEST_BLOCKS: u64 = 32;
/// Magic of a block written by the host.
pub const HOST_MAGIC: u64 = u64::from_le_bytes(*b"NOVAHOST");
/// Magic of a block written by the guest.
pub const GUEST_MAGIC: u64 = u64::from_le_bytes(*b"NOVAGUES");

/// Page size the dirty workload works in.
pub const PAGE_SIZE: usize = 4096;

/// Console lines. Every guest prints [`BOOTED`] first, then only `NOVA-<KEY> k=v ...`.
pub mod line {
    /// First line of every guest.
    pub const BOOTED: &str = "NOVA-BOOTED";
    /// `NOVA-MEM mib=<total RAM the guest sees>`.
    pub const MEM: &str = "NOVA-MEM";
    /// `NOVA-CPU apic=<id>`, one per running vCPU.
    pub const CPU: &str = "NOVA-CPU";
    /// `NOVA-CPUS count=<n>` once every vCPU that answered has reported.
    pub const CPUS: &str = "NOVA-CPUS";
    /// `NOVA-TICK <seq>` about every millisecond (`counter`).
    pub const TICK: &str = "NOVA-TICK";
    /// `NOVA-DIRTY pass=<n> pages=<n> errors=<n>` after each pass (`dirty`).
    pub const DIRTY: &str = "NOVA-DIRTY";
    /// `NOVA-DISK pass=<n> host_ok=<n> written=<n> verified=<n> errors=<n>` (`disk`).
    pub const DISK: &str = "NOVA-DISK";
    /// `NOVA-NET ip=<a.b.c.d> mac=<xx:..> ready=1` (`net`).
    pub const NET: &str = "NOVA-NET";
    /// `NOVA-POWEROFF` just before the guest powers off (`poweroff`).
    pub const POWEROFF: &str = "NOVA-POWEROFF";
    /// `NOVA-RESET` just before the guest resets itself (`reset`).
    pub const RESET: &str = "NOVA-RESET";
    /// `NOVA-SPIN after_s=<n>` when `spin:<n>` stops halting and starts spinning.
    pub const SPIN: &str = "NOVA-SPIN";
    /// `NOVA-ERROR what=<word> ...` for anything that went wrong.
    pub const ERROR: &str = "NOVA-ERROR";
}

/// Mixes two words into one (splitmix64 finaliser); cheap, no tables.
pub const fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `block` as block `index`, generation `generation`, with `magic`
/// ([`HOST_MAGIC`] or [`GUEST_MAGIC`]). The last word is a checksum of the others.
pub fn fill_block(block: &mut [u64; BLOCK_WORDS], magic: u64, index: u64, generation: u64) {
    let seed = mix(index, generation);
    block[0] = magic;
    block[1] = index;
    block[2] = generation;
    let mut i = 3;
    while i < BLOCK_WORDS - 1 {
        block[i] = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        i += 1;
    }
    block[BLOCK_WORDS - 1] = block_checksum(block);
}

/// Checksum over every word but the last.
pub fn block_checksum(block: &[u64; BLOCK_WORDS]) -> u64 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < BLOCK_WORDS - 1 {
        sum = sum.rotate_left(5) ^ block[i];
        i += 1;
    }
    sum
}

/// Why a block did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The first word is not the expected magic (never written, or written by the other side).
    Magic,
    /// The block names another index: a write landed in the wrong place.
    Index,
    /// A word differs from the pattern its header promises.
    Pattern,
    /// The checksum word does not match.
    Checksum,
}

/// Verifies block `index` written with `magic`; returns its generation.
pub fn check_block(block: &[u64; BLOCK_WORDS], magic: u64, index: u64) -> Result<u64, BlockError> {
    if block[0] != magic {
        return Err(BlockError::Magic);
    }
    if block[1] != index {
        return Err(BlockError::Index);
    }
    let generation = block[2];
    let seed = mix(index, generation);
    let mut i = 3;
    while i < BLOCK_WORDS - 1 {
        if block[i] != seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) {
            return Err(BlockError::Pattern);
        }
        i += 1;
    }
    if block[BLOCK_WORDS - 1] != block_checksum(block) {
        return Err(BlockError::Checksum);
    }
    Ok(generation)
}

/// The two words the `dirty` workload writes at the start of page `page` in pass
/// `generation` (generations start at 1; an untouched page reads as zeros).
/// Reading them back verifies the page: a page a migration lost holds an older pair.
pub const fn dirty_words(page: u64, generation: u64) -> [u64; 2] {
    [
        (page << 24) ^ generation ^ 0x4E4F_5641_0000_0000,
        mix(page, generation),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_block_verifies_and_names_its_generation() {
        let mut b = [0u64; BLOCK_WORDS];
        fill_block(&mut b, GUEST_MAGIC, 17, 3);
        assert_eq!(check_block(&b, GUEST_MAGIC, 17), Ok(3));
    }

    #[test]
    fn a_block_in_the_wrong_place_or_torn_is_refused() {
        let mut b = [0u64; BLOCK_WORDS];
        fill_block(&mut b, HOST_MAGIC, 2, 1);
        assert_eq!(check_block(&b, GUEST_MAGIC, 2), Err(BlockError::Magic));
        assert_eq!(check_block(&b, HOST_MAGIC, 3), Err(BlockError::Index));
        let mut torn = b;
        torn[100] ^= 1;
        assert_eq!(check_block(&torn, HOST_MAGIC, 2), Err(BlockError::Pattern));
        let mut bad_sum = b;
        bad_sum[BLOCK_WORDS - 1] ^= 1;
        assert_eq!(
            check_block(&bad_sum, HOST_MAGIC, 2),
            Err(BlockError::Checksum)
        );
    }

    #[test]
    fn dirty_words_differ_by_page_and_generation() {
        assert_ne!(dirty_words(1, 1), dirty_words(1, 2));
        assert_ne!(dirty_words(1, 1), dirty_words(2, 1));
        assert_ne!(dirty_words(0, 1), [0, 0]);
    }
}
