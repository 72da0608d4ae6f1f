//! `disk`: host blocks are counted, guest blocks are written in the abi's format with
//! the pass as generation, and a missing or small disk is reported.

mod support;

use nova_guest_abi::{
    check_block, fill_block, line, BLOCK_SIZE, BLOCK_WORDS, GUEST_BLOCKS, GUEST_BLOCKS_START,
    GUEST_MAGIC, HOST_BLOCKS, HOST_MAGIC,
};
use support::{num, Agent, TempFile, SECS};

fn block_bytes(words: &[u64; BLOCK_WORDS]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn block_words(bytes: &[u8]) -> [u64; BLOCK_WORDS] {
    let mut w = [0u64; BLOCK_WORDS];
    for (word, b) in w.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(b.try_into().unwrap());
    }
    w
}

/// A 1 MiB image whose first blocks the host wrote (`host_blocks` of them valid).
fn image(tag: &str, host_blocks: u64) -> TempFile {
    let f = TempFile::new(tag);
    let mut data = vec![0u8; 1 << 20];
    let mut words = [0u64; BLOCK_WORDS];
    for i in 0..host_blocks {
        fill_block(&mut words, HOST_MAGIC, i, 1);
        let at = i as usize * BLOCK_SIZE;
        data[at..at + BLOCK_SIZE].copy_from_slice(&block_bytes(&words));
    }
    std::fs::write(f.path(), data).unwrap();
    f
}

#[test]
fn host_blocks_are_counted_and_guest_blocks_verify_from_outside() {
    let disk = image("verify", HOST_BLOCKS);
    let mut agent = Agent::start(&[
        "--cmdline",
        "nova.workload=disk,poweroff",
        "--disk",
        disk.arg(),
    ]);
    let lines = agent.rest(SECS(20));
    let pass = lines
        .iter()
        .find(|l| l.starts_with(line::DISK))
        .expect("a disk pass");
    assert_eq!(
        *pass,
        format!(
            "{} pass=1 host_ok=16 written={GUEST_BLOCKS} verified={GUEST_BLOCKS} errors=0",
            line::DISK
        )
    );
    let data = std::fs::read(disk.path()).unwrap();
    for i in GUEST_BLOCKS_START..GUEST_BLOCKS_START + GUEST_BLOCKS {
        let at = i as usize * BLOCK_SIZE;
        let words = block_words(&data[at..at + BLOCK_SIZE]);
        assert_eq!(
            check_block(&words, GUEST_MAGIC, i),
            Ok(1),
            "guest block {i}"
        );
    }
    // The host's blocks are read, never written.
    for i in 0..HOST_BLOCKS {
        let at = i as usize * BLOCK_SIZE;
        assert_eq!(
            check_block(&block_words(&data[at..at + BLOCK_SIZE]), HOST_MAGIC, i),
            Ok(1)
        );
    }
}

#[test]
fn passes_repeat_with_rising_generations_and_partial_host_blocks_count() {
    let disk = image("passes", 5);
    let mut agent = Agent::start(&["--cmdline", "nova.workload=disk", "--disk", disk.arg()]);
    for pass in 1..=3 {
        let (_, l) = agent.wait_for(line::DISK, SECS(20));
        assert_eq!(num(&l, "pass"), pass);
        assert_eq!(num(&l, "host_ok"), 5);
        assert_eq!(num(&l, "verified"), GUEST_BLOCKS);
        assert_eq!(num(&l, "errors"), 0);
    }
}

#[test]
fn without_the_disk_flag_the_host_mode_refuses_to_guess() {
    let mut agent = Agent::start(&["--cmdline", "nova.workload=disk"]);
    assert_eq!(
        agent.wait_for(line::ERROR, SECS(10)).1,
        "NOVA-ERROR what=disk_needs_path"
    );
}

#[test]
fn a_disk_too_small_for_the_guest_blocks_is_reported() {
    let disk = TempFile::new("small");
    std::fs::write(disk.path(), vec![0u8; 8 * BLOCK_SIZE]).unwrap();
    let mut agent = Agent::start(&["--cmdline", "nova.workload=disk", "--disk", disk.arg()]);
    let (_, l) = agent.wait_for(line::ERROR, SECS(10));
    assert!(l.starts_with("NOVA-ERROR what=disk_too_small "), "{l}");
}
