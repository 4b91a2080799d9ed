//! Data page checksums, verified while a backup copies relation files
//! (pgBackRest's `checksum-page`), and again while a restore writes them
//! ([`super::restorepages`]).
//!
//! With data checksums on (`initdb --data-checksums`), PostgreSQL stores a
//! 16-bit checksum in every page header (`pd_checksum`, bytes 8..10) when
//! it writes the page. The algorithm (PostgreSQL's
//! `src/include/storage/checksum_impl.h`): the 8 KiB page, read as 2048
//! native-endian 32-bit words with `pd_checksum` taken as zero, is spread
//! over 32 lanes (word `i` goes to lane `i % 32`), each an FNV-1a variant
//! seeded with its own constant that mixes a word in as
//! `t = sum ^ word; sum = t * 16777619 ^ (t >> 17)`; two more rounds of
//! zero words follow, the lanes are xor-ed together, the block number is
//! xor-ed in, and the result is folded to `(x % 65535) + 1` (never zero).
//!
//! A page is judged the way pgBackRest does it on a live cluster:
//! all-zero pages (new, not yet written) pass; pages whose `pd_lsn` is at
//! or past the backup's start LSN are skipped (a concurrent write may have
//! torn them, and replaying the WAL from the start LSN rewrites them from
//! full-page images); every other page must carry the right checksum. A
//! page that fails is read again from the file once before it counts (the
//! copy may have raced a write); see [`check_pages`].

/// PostgreSQL's block size: pages of any other size are not checked.
pub const PAGE_SIZE: usize = 8192;

const LANES: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
/// Each lane's starting value (fixed by PostgreSQL's on-disk format).
const LANE_SEEDS: [u32; LANES] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// How a backup checks pages (none when the cluster has no data checksums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCheck {
    /// The backup's start LSN: pages at or past it are left to WAL replay.
    pub lsn_limit: u64,
    /// Blocks per relation segment file (`RELSEG_SIZE`, 131072 = 1 GiB).
    pub blocks_per_segment: u32,
}

#[inline(always)]
fn mix(sum: u32, word: u32) -> u32 {
    let t = sum ^ word;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// PostgreSQL's checksum of `page` (8 KiB) as block `block` of its relation.
/// The stored `pd_checksum` does not take part.
pub fn page_checksum(page: &[u8], block: u32) -> u16 {
    assert_eq!(page.len(), PAGE_SIZE, "a page is {PAGE_SIZE} bytes");
    let mut sums = LANE_SEEDS;
    for (row, words) in page.chunks_exact(4 * LANES).enumerate() {
        for (lane, word) in words.chunks_exact(4).enumerate() {
            let mut bytes: [u8; 4] = word.try_into().expect("4 bytes");
            if row == 0 && lane == 2 {
                // Bytes 8..10 are pd_checksum itself: counted as zero.
                bytes[0] = 0;
                bytes[1] = 0;
            }
            sums[lane] = mix(sums[lane], u32::from_ne_bytes(bytes));
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            *sum = mix(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ block;
    ((folded % 65535) + 1) as u16
}

/// `pd_checksum`: the checksum PostgreSQL stored in the page.
pub fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_ne_bytes([page[8], page[9]])
}

/// `pd_lsn`: the LSN of the last WAL record that changed the page
/// (two native-endian 32-bit halves, high first).
pub fn page_lsn(page: &[u8]) -> u64 {
    let high = u32::from_ne_bytes(page[0..4].try_into().expect("4 bytes"));
    let low = u32::from_ne_bytes(page[4..8].try_into().expect("4 bytes"));
    (u64::from(high) << 32) | u64::from(low)
}

/// `pd_upper`: zero only on a page that was never initialised.
fn pd_upper(page: &[u8]) -> u16 {
    u16::from_ne_bytes([page[14], page[15]])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All zeros: allocated, never written.
    New,
    /// Changed at or after the backup's start (or gone when read again):
    /// WAL replay rewrites it.
    Recent,
    Valid,
    Damaged,
}

/// Judge one page of block `block`.
pub fn judge(page: &[u8], block: u32, lsn_limit: u64) -> Verdict {
    if pd_upper(page) == 0 {
        // PostgreSQL accepts an uninitialised page only if it is all zeros.
        return if page.iter().all(|b| *b == 0) {
            Verdict::New
        } else {
            Verdict::Damaged
        };
    }
    if page_lsn(page) >= lsn_limit {
        return Verdict::Recent;
    }
    if page_checksum(page, block) == stored_checksum(page) {
        Verdict::Valid
    } else {
        Verdict::Damaged
    }
}

/// How many judged pages got each [`Verdict`] (after the second read).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub valid: u64,
    pub new: u64,
    pub recent: u64,
    pub damaged: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.valid += other.valid;
        self.new += other.new;
        self.recent += other.recent;
        self.damaged += other.damaged;
    }

    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::New => self.new += 1,
            Verdict::Recent => self.recent += 1,
            Verdict::Valid => self.valid += 1,
            Verdict::Damaged => self.damaged += 1,
        }
    }
}

/// Judge the whole pages of `data`, whose first byte is the start of block
/// `first_block`, and return the damaged blocks; a partial page at the end
/// (a relation being extended) is not judged. A page that fails is judged
/// again on what `reread(page index in data)` returns (the page read anew
/// from the file; `None` when it is gone: the relation was truncated or
/// dropped, which WAL replay repeats); it counts only if it fails again.
pub fn check_pages(
    data: &[u8],
    first_block: u32,
    lsn_limit: u64,
    tally: &mut Tally,
    mut reread: impl FnMut(usize) -> Option<Vec<u8>>,
) -> Vec<u32> {
    let mut damaged = Vec::new();
    for (index, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
        let block = first_block.wrapping_add(index as u32);
        let mut verdict = judge(page, block, lsn_limit);
        if verdict == Verdict::Damaged {
            verdict = match reread(index) {
                Some(again) if again.len() == PAGE_SIZE => judge(&again, block, lsn_limit),
                _ => Verdict::Recent,
            };
            if verdict == Verdict::Damaged {
                damaged.push(block);
            }
        }
        tally.count(verdict);
    }
    damaged
}

/// A page that failed its check: its block, the checksum its content
/// gives (what `pd_checksum` should hold) and the one stored in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub block: u32,
    pub expected: u16,
    pub found: u16,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "block {}: checksum expected {:#06x}, found {:#06x}",
            self.block, self.expected, self.found
        )
    }
}

/// [`check_pages`] on a copy that cannot be read again (a restore checks
/// the stored bytes it writes): the pages that fail, with both checksums.
pub fn failures(data: &[u8], first_block: u32, lsn_limit: u64, tally: &mut Tally) -> Vec<Failure> {
    let page = |index: usize| &data[index * PAGE_SIZE..(index + 1) * PAGE_SIZE];
    // Judged again on the same bytes: the verdict stands.
    let damaged = check_pages(data, first_block, lsn_limit, tally, |i| {
        Some(page(i).to_vec())
    });
    damaged
        .into_iter()
        .map(|block| {
            let bytes = page(block.wrapping_sub(first_block) as usize);
            Failure {
                block,
                expected: page_checksum(bytes, block),
                found: stored_checksum(bytes),
            }
        })
        .collect()
}

/// `1, 3-5, 9` (sorted blocks), with `and N more` when `total` exceeds
/// the listed ones.
pub fn describe_blocks(blocks: &[u32], total: u64) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let start = blocks[i];
        let mut end = start;
        while i + 1 < blocks.len() && blocks[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = blocks[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    let mut text = out.join(", ");
    let more = total.saturating_sub(blocks.len() as u64);
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A page as PostgreSQL writes it: header (`pd_lsn`, `pd_lower`,
    /// `pd_upper`, `pd_special`, `pd_pagesize_version`), some content, and
    /// the checksum for `block`.
    pub(crate) fn valid_page(block: u32, lsn: u64, seed: u8) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        page[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        page[12..14].copy_from_slice(&28u16.to_ne_bytes());
        page[14..16].copy_from_slice(&8000u16.to_ne_bytes());
        page[16..18].copy_from_slice(&8192u16.to_ne_bytes());
        page[18..20].copy_from_slice(&(8192u16 | 4).to_ne_bytes());
        for (i, b) in page[8000..].iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8).wrapping_mul(31);
        }
        let sum = page_checksum(&page, block);
        page[8..10].copy_from_slice(&sum.to_ne_bytes());
        page
    }

    /// Block 1 of a table captured once from our own test cluster
    /// (PostgreSQL 15 on x86_64, `initdb --data-checksums`; `CREATE TABLE
    /// fixture(i int, t text)`, 200 rows, CHECKPOINT): its two runs of
    /// non-zero bytes as (offset, hex); every other byte is zero.
    const CAPTURED_BLOCK_1: [(usize, &str); 2] = [
        (
            4,
            concat!(
                "f87a76016dfd00005400a81d0020042000000000d89f4800b09f4800889f4800609f4800",
                "389f4800109f4800e89e4800c09e4800989e4800709e4800489e4800209e4800f89d4800",
                "d09d4800a89d48",
            ),
        ),
        (
            7592,
            concat!(
                "d40200000000000005000000000001000f00020002081800c800000011726f7720323030",
                "00000000d40200000000000005000000000001000e00020002081800c700000011726f77",
                "2031393900000000d40200000000000005000000000001000d00020002081800c6000000",
                "11726f772031393800000000d40200000000000005000000000001000c00020002081800",
                "c500000011726f772031393700000000d40200000000000005000000000001000b000200",
                "02081800c400000011726f772031393600000000d4020000000000000500000000000100",
                "0a00020002081800c300000011726f772031393500000000d40200000000000005000000",
                "000001000900020002081800c200000011726f772031393400000000d402000000000000",
                "05000000000001000800020002081800c100000011726f772031393300000000d4020000",
                "0000000005000000000001000700020002081800c000000011726f772031393200000000",
                "d40200000000000005000000000001000600020002081800bf00000011726f7720313931",
                "00000000d40200000000000005000000000001000500020002081800be00000011726f77",
                "2031393000000000d40200000000000005000000000001000400020002081800bd000000",
                "11726f772031383900000000d40200000000000005000000000001000300020002081800",
                "bc00000011726f772031383800000000d402000000000000050000000000010002000200",
                "02081800bb00000011726f772031383700000000d4020000000000000500000000000100",
                "0100020002081800ba00000011726f7720313836",
            ),
        ),
    ];

    fn captured_page() -> Vec<u8> {
        let mut page = vec![0u8; PAGE_SIZE];
        for (offset, hex) in CAPTURED_BLOCK_1 {
            for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
                let text = std::str::from_utf8(pair).unwrap();
                page[offset + i] = u8::from_str_radix(text, 16).unwrap();
            }
        }
        page
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_page_written_by_postgresql_verifies() {
        let page = captured_page();
        assert_eq!(stored_checksum(&page), 0xfd6d);
        assert_eq!(page_lsn(&page), 0x0176_7af8);
        assert_eq!(page_checksum(&page, 1), 0xfd6d);
        assert_eq!(judge(&page, 1, u64::MAX), Verdict::Valid);
        // As another block, or with one bit flipped, it fails.
        assert_eq!(judge(&page, 0, u64::MAX), Verdict::Damaged);
        let mut flipped = page.clone();
        flipped[7700] ^= 0x04;
        assert_eq!(judge(&flipped, 1, u64::MAX), Verdict::Damaged);
        assert_eq!(judge(&flipped, 1, 0x0176_7af8), Verdict::Recent);
    }

    #[test]
    fn checksum_ignores_its_own_field_and_depends_on_the_block() {
        let page = valid_page(7, 0x1_0000_0028, 3);
        assert_eq!(judge(&page, 7, u64::MAX), Verdict::Valid);
        let mut other_sum = page.clone();
        other_sum[8] ^= 0xff;
        assert_eq!(
            page_checksum(&other_sum, 7),
            page_checksum(&page, 7),
            "pd_checksum is not part of the checksum"
        );
        assert_eq!(judge(&other_sum, 7, u64::MAX), Verdict::Damaged);
        assert_ne!(page_checksum(&page, 8), page_checksum(&page, 7));
        assert_eq!(judge(&page, 8, u64::MAX), Verdict::Damaged);
        // Never zero: zero means "no checksum" to PostgreSQL.
        for block in 0..2000 {
            assert_ne!(page_checksum(&page, block), 0);
        }
    }

    #[test]
    fn verdicts() {
        let zeros = vec![0u8; PAGE_SIZE];
        assert_eq!(judge(&zeros, 3, 0), Verdict::New);
        let mut junk = zeros.clone();
        junk[4000] = 1;
        assert_eq!(judge(&junk, 3, u64::MAX), Verdict::Damaged);
        let mut page = valid_page(3, 0x5000, 1);
        assert_eq!(judge(&page, 3, 0x5001), Verdict::Valid);
        page[6000] ^= 0x10;
        assert_eq!(judge(&page, 3, 0x5001), Verdict::Damaged);
        // Written at or after the backup started: left to WAL replay.
        assert_eq!(judge(&page, 3, 0x5000), Verdict::Recent);
        assert_eq!(page_lsn(&page), 0x5000);
    }

    #[test]
    fn a_failed_page_counts_only_if_the_second_read_fails_too() {
        let mut data = Vec::new();
        for block in 10..14 {
            data.extend(valid_page(block, 0x100, block as u8));
        }
        data[PAGE_SIZE + 100] ^= 1; // block 11
        data[3 * PAGE_SIZE + 100] ^= 1; // block 13
        data.extend_from_slice(&[7u8; 100]); // a partial page: not judged
        let fixed = valid_page(13, 0x100, 13);
        let mut rereads = Vec::new();
        let mut tally = Tally::default();
        let damaged = check_pages(&data, 10, 0x200, &mut tally, |index| {
            rereads.push(index);
            match index {
                1 => Some(data[PAGE_SIZE..2 * PAGE_SIZE].to_vec()),
                _ => Some(fixed.clone()),
            }
        });
        assert_eq!(damaged, vec![11]);
        assert_eq!(rereads, vec![1, 3]);
        let want = Tally {
            valid: 3,
            damaged: 1,
            ..Tally::default()
        };
        assert_eq!(tally, want);
        // Gone when read again (truncated): not counted.
        let mut tally = Tally::default();
        assert!(check_pages(&data, 10, 0x200, &mut tally, |_| None).is_empty());
        assert_eq!((tally.valid, tally.recent, tally.damaged), (2, 2, 0));
    }

    #[test]
    fn failures_carry_both_checksums() {
        let mut data = Vec::new();
        for block in 20..23 {
            data.extend(valid_page(block, 0x100, block as u8));
        }
        data.extend(vec![0u8; PAGE_SIZE]); // new
        data[PAGE_SIZE + 5000] ^= 0x5a; // block 21
        let mut tally = Tally::default();
        let found = failures(&data, 20, 0x200, &mut tally);
        let page = &data[PAGE_SIZE..2 * PAGE_SIZE];
        let want = Failure {
            block: 21,
            expected: page_checksum(page, 21),
            found: stored_checksum(page),
        };
        assert_eq!(found, vec![want]);
        assert_ne!(want.expected, want.found);
        assert_eq!((tally.valid, tally.new, tally.damaged), (2, 1, 1));
        assert_eq!(
            want.to_string(),
            format!(
                "block 21: checksum expected {:#06x}, found {:#06x}",
                want.expected, want.found
            )
        );
        // Changed at or after the backup's start: left to WAL replay.
        assert!(failures(&data, 20, 0x100, &mut tally).is_empty());
    }

    #[test]
    fn block_lists() {
        assert_eq!(describe_blocks(&[1], 1), "1");
        assert_eq!(describe_blocks(&[0, 2, 3, 4, 9], 5), "0, 2-4, 9");
        assert_eq!(describe_blocks(&[5, 6], 40), "5-6 and 38 more");
    }
}
