//! The data path without PostgreSQL: files → pipeline → parts in a posix
//! repository → extract, with tiny parts so that files are cut into
//! pieces, and an incremental pass on top; page checks on relation files.

use std::collections::HashMap;
use std::sync::Arc;

use super::extract;
use super::pagecheck::{self, PageCheck, PAGE_SIZE};
use super::pipeline::{self, ParentIndex};
use super::progress::Progress;
use super::walk;
use crate::backup::model::manifest::{self, BackupType, Compression, Manifest};
use crate::repo::layout::Layout;
use crate::repo::posix::PosixStorage;
use crate::repo::retry::{RetryPolicy, Retrying};
use crate::repo::{PutMode, Storage};

fn pseudo(len: usize, seed: u64) -> Vec<u8> {
    crate::repo::conformance::pseudo_random(len, seed)
}

fn manifest_of(label: &str, out: pipeline::Output, prior: Option<&Manifest>) -> Manifest {
    let mut reference: Vec<String> = out
        .files
        .iter()
        .filter_map(|f| f.reference.clone())
        .collect();
    reference.sort();
    reference.dedup();
    Manifest {
        label: label.into(),
        backup_type: if prior.is_some() {
            BackupType::Incr
        } else {
            BackupType::Full
        },
        prior: prior.map(|p| p.label.clone()),
        reference,
        stanza: "t".into(),
        system_identifier: "1".into(),
        pg_version: "15".into(),
        pg_version_num: 150_000,
        from_standby: false,
        timeline: 1,
        stop_timeline: 1,
        start_lsn: "0/1000000".into(),
        stop_lsn: "0/1000100".into(),
        start_wal: "000000010000000000000001".into(),
        stop_wal: "000000010000000000000001".into(),
        wal_segment_size: 16 << 20,
        start_time_us: 0,
        stop_time_us: 1,
        backup_label: String::new(),
        tablespace_map: None,
        compression: Compression {
            kind: "zstd".into(),
            level: 1,
        },
        pgpilot_version: "test".into(),
        parts: out.parts,
        directories: Vec::new(),
        links: Vec::new(),
        page_checksums: false,
        segment_blocks: None,
        error: out.files.iter().any(|f| f.has_page_errors()),
        files: out.files,
    }
}

async fn backup(
    storage: Arc<dyn Storage>,
    layout: &Layout,
    data: &std::path::Path,
    label: &str,
    parent: Option<&Manifest>,
    page_check: Option<PageCheck>,
) -> Manifest {
    let listing = walk::walk(data).unwrap();
    let progress = Progress::start("test", 1);
    let out = pipeline::run(
        storage.clone(),
        layout,
        label,
        pipeline::Input {
            files: listing.files,
            parent: parent.map(ParentIndex::of),
            part_target: 64 * 1024,
            level: 1,
            parallelism: 3,
            page_check,
        },
        progress.counter(),
    )
    .await
    .unwrap();
    let m = manifest_of(label, out, parent);
    m.validate().unwrap();
    m.store(&*storage, layout).await.unwrap();
    m
}

/// Restore every file of `m` into a map path → bytes; the problems found.
async fn extract_all(
    storage: Arc<dyn Storage>,
    layout: &Layout,
    m: &Manifest,
) -> (HashMap<String, Vec<u8>>, Vec<extract::Problem>) {
    let parts = extract::part_records(&*storage, layout, m).await.unwrap();
    let jobs = extract::plan(m, 0..m.files.len(), &parts).unwrap();
    let files = Arc::new(std::sync::Mutex::new(HashMap::<String, Vec<u8>>::new()));
    for f in &m.files {
        files
            .lock()
            .unwrap()
            .insert(f.path.clone(), vec![0u8; f.size as usize]);
    }
    let sink_files = files.clone();
    let manifest = Arc::new(m.clone());
    let retrying = Arc::new(Retrying::new(storage, RetryPolicy::default()));
    let problems = extract::run_parts(retrying, layout, jobs, 2, false, move |key, bytes, job| {
        let mut sink = |idx: usize, offset: u64, data: &[u8]| {
            let mut all = sink_files.lock().unwrap();
            let file = all.get_mut(&manifest.files[idx].path).unwrap();
            file[offset as usize..offset as usize + data.len()].copy_from_slice(data);
            Ok(())
        };
        extract::read_part(key, bytes, job, &manifest.files, &mut sink, None)
    })
    .await
    .unwrap();
    let files = std::mem::take(&mut *files.lock().unwrap());
    (files, problems)
}

#[tokio::test]
async fn files_survive_the_round_trip_and_damage_is_named() {
    let repo = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    let mut put = |path: &str, bytes: Vec<u8>| {
        let full = d.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, &bytes).unwrap();
        expected.insert(path.to_string(), bytes);
    };
    put("PG_VERSION", b"15\n".to_vec());
    put("empty", Vec::new());
    put("base/1/big", pseudo(300_000, 1));
    put("base/1/exact", pseudo(64 * 1024 - 512, 2));
    for i in 0..40 {
        put(
            &format!("base/1/small{i}"),
            pseudo(3000 + i * 97, 10 + i as u64),
        );
    }
    put(&format!("base/{}/long", "x".repeat(120)), pseudo(5000, 3));
    put("global/pg_control", pseudo(8192, 4));

    let storage: Arc<dyn Storage> = Arc::new(PosixStorage::open(repo.path()).unwrap());
    let layout = Layout::new("t");
    let full = backup(storage.clone(), &layout, d, "F", None, None).await;
    assert!(full.parts.len() > 5, "{} parts", full.parts.len());
    let big = full.files.iter().find(|f| f.path == "base/1/big").unwrap();
    assert!(big.pieces.len() >= 4 && big.is_split());
    let (restored, problems) = extract_all(storage.clone(), &layout, &full).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(restored, expected);

    // Incremental: change one file, add one, remove one.
    std::fs::write(d.join("base/1/small3"), b"changed").unwrap();
    expected.insert("base/1/small3".into(), b"changed".to_vec());
    std::fs::write(d.join("base/1/new"), pseudo(70_000, 9)).unwrap();
    expected.insert("base/1/new".into(), pseudo(70_000, 9));
    std::fs::remove_file(d.join("base/1/small4")).unwrap();
    expected.remove("base/1/small4");
    let incr = backup(storage.clone(), &layout, d, "F_I", Some(&full), None).await;
    let copied: Vec<&str> = incr
        .files
        .iter()
        .filter(|f| f.reference.is_none())
        .map(|f| f.path.as_str())
        .collect();
    let mut copied_sorted = copied.clone();
    copied_sorted.sort();
    assert_eq!(copied_sorted, vec!["base/1/new", "base/1/small3"]);
    assert_eq!(incr.reference, vec!["F".to_string()]);
    let (restored, problems) = extract_all(storage.clone(), &layout, &incr).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(restored, expected);

    // One flipped byte in a part of the full backup: named files.
    let key = layout.data_part_key("F", 2);
    let mut bytes = std::fs::read(repo.path().join(&key)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    storage
        .put(&key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();
    let (_, problems) = extract_all(storage.clone(), &layout, &full).await;
    assert!(
        problems
            .iter()
            .any(|p| p.path.is_none() && p.part_key == key),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.path.is_some()),
        "no file named: {problems:?}"
    );
}

#[tokio::test]
async fn damaged_pages_are_found_across_pieces_and_segments() {
    use pagecheck::tests::valid_page;
    let repo = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let write = |path: &str, bytes: &[u8]| {
        let full = d.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, bytes).unwrap();
    };
    // Files of odd sizes first, so that the relation files start at
    // offsets of the parts that are not page-aligned.
    write("PG_VERSION", b"15\n");
    write("base/5/PG_VERSION", b"15\n");
    write("base/5/pg_filenode.map", &pseudo(512, 5)); // not pages: never judged
    let lsn_limit = 0x9000;
    let relation = |first_block: u32, pages: u32, damaged: &[u32], recent: &[u32]| {
        let mut bytes = Vec::new();
        for block in first_block..first_block + pages {
            let lsn = if recent.contains(&block) {
                lsn_limit
            } else {
                0x100
            };
            let mut page = valid_page(block, lsn, block as u8);
            if damaged.contains(&block) || recent.contains(&block) {
                page[5000] ^= 0x40;
            }
            bytes.extend(page);
        }
        bytes
    };
    // 20 pages over 64 KiB parts: cut into pieces. Block 9 damaged, block
    // 12 torn but written after the backup's start (left to WAL replay).
    write("base/5/16384", &relation(0, 20, &[9], &[12]));
    let mut with_new_page = relation(0, 2, &[], &[]);
    with_new_page.extend(vec![0u8; PAGE_SIZE]);
    write("base/5/16385", &with_new_page);
    // Segment 1 with 16 blocks per segment: blocks 16..21, 18 damaged.
    write("base/5/16384.1", &relation(16, 5, &[18], &[]));
    write("global/1262", &relation(0, 1, &[0], &[]));
    let check = PageCheck {
        lsn_limit,
        blocks_per_segment: 16,
    };

    let storage: Arc<dyn Storage> = Arc::new(PosixStorage::open(repo.path()).unwrap());
    let layout = Layout::new("t");
    let full = backup(storage.clone(), &layout, d, "F", None, Some(check)).await;
    let errors = |m: &Manifest, path: &str| {
        let f = m.files.iter().find(|f| f.path == path).unwrap();
        (f.checksum_errors.clone(), f.checksum_error_count)
    };
    assert!(full.error);
    assert_eq!(errors(&full, "base/5/16384"), (vec![9], 1));
    assert_eq!(errors(&full, "base/5/16384.1"), (vec![18], 1));
    assert_eq!(errors(&full, "global/1262"), (vec![0], 1));
    assert_eq!(errors(&full, "base/5/16385"), (vec![], 0));
    assert_eq!(errors(&full, "base/5/pg_filenode.map"), (vec![], 0));
    let big = full
        .files
        .iter()
        .find(|f| f.path == "base/5/16384")
        .unwrap();
    assert!(big.pieces.len() >= 3, "{:?}", big.pieces);
    assert!(
        big.pieces
            .iter()
            .all(|p| p.offset.is_multiple_of(PAGE_SIZE as u64)),
        "pieces of a relation file start on page boundaries: {:?}",
        big.pieces
    );
    // The data is stored as read, damaged pages included.
    let (restored, problems) = extract_all(storage.clone(), &layout, &full).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        restored["base/5/16384"],
        std::fs::read(d.join("base/5/16384")).unwrap()
    );

    // An incremental that refers to the unchanged damaged file keeps its
    // list; a file rewritten without damage loses it.
    write("global/1262", &relation(0, 1, &[], &[]));
    let incr = backup(storage.clone(), &layout, d, "F_I", Some(&full), Some(check)).await;
    let referred = incr
        .files
        .iter()
        .find(|f| f.path == "base/5/16384")
        .unwrap();
    assert_eq!(referred.reference.as_deref(), Some("F"));
    assert_eq!(errors(&incr, "base/5/16384"), (vec![9], 1));
    assert_eq!(errors(&incr, "global/1262"), (vec![], 0));
    assert!(incr.error);

    // Without page checks nothing is judged.
    let unchecked = backup(storage.clone(), &layout, d, "G", None, None).await;
    assert!(!unchecked.error);
    assert_eq!(unchecked.damaged_files().count(), 0);
}

#[test]
fn manifests_name_split_entries() {
    let m = manifest::tests::sample();
    assert!(m.files[1].is_split());
    assert!(!m.files[0].is_split());
}
