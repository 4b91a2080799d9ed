//! Free loopback ports, never handed out twice.
//!
//! A port is picked by binding 127.0.0.1:0 — the kernel hands out a port
//! nobody listens on. Such ports come from the ephemeral range, so an
//! outgoing connection could later take the same port as its local port and
//! make the service's `bind` fail; to rule that out, ports are drawn from
//! just below the ephemeral range instead when there is room (checked free by
//! binding them), and `:0` is the fallback.
//!
//! Within one process a set remembers every port handed out. Across
//! processes (nextest runs each test in its own process) a lock file per
//! port under the system temp dir, held for the life of the process, keeps
//! two tests from picking the same port at the same time.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

static TAKEN: Mutex<Option<HashMap<u16, Option<File>>>> = Mutex::new(None);

/// Below this many candidate ports under the ephemeral range, use `:0`.
const MIN_POOL: u16 = 2000;
/// Lowest port ever drawn from the pool.
const POOL_FLOOR: u16 = 15000;

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("pgpilot-port-locks")
}

/// `[low, high)` of the pool below the kernel's ephemeral range, if big enough.
fn pool() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = text.split_whitespace().next()?.parse().ok()?;
    (ephemeral_low > POOL_FLOOR && ephemeral_low - POOL_FLOOR >= MIN_POOL)
        .then_some((POOL_FLOOR, ephemeral_low))
}

fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// Is nobody listening on 127.0.0.1:port (and may we bind it)?
fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Take the cross-process lock for `port`; `None` when another process holds it.
fn lock(port: u16) -> Option<Option<File>> {
    let dir = lock_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        // No lock directory: fall back to the in-process set alone.
        return Some(None);
    }
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
    {
        Ok(f) => f,
        Err(_) => return Some(None),
    };
    match file.try_lock() {
        Ok(()) => Some(Some(file)),
        Err(_) => None,
    }
}

/// A loopback port nothing listens on, not handed out before by this process
/// nor currently by another process that uses this module.
pub fn free_port() -> u16 {
    let mut guard = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = guard.get_or_insert_with(HashMap::new);
    let pool = pool();
    for attempt in 0..1000 {
        let port = match pool {
            Some((low, high)) if attempt < 900 => {
                low + (random_u64() % u64::from(high - low)) as u16
            }
            _ => match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(_) => continue,
            },
        };
        if taken.contains_key(&port) {
            continue;
        }
        let Some(lock) = lock(port) else {
            continue;
        };
        if !bindable(port) {
            continue;
        }
        taken.insert(port, lock);
        return port;
    }
    panic!("no free loopback port found after 1000 attempts");
}

/// `count` consecutive loopback ports, the first returned, each free and
/// held like [`free_port`]'s (for programs that derive their ports from one
/// base port, such as `pgpilot demo up --base-port`).
pub fn free_port_block(count: u16) -> u16 {
    let mut guard = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = guard.get_or_insert_with(HashMap::new);
    let (low, high) = pool().unwrap_or((POOL_FLOOR, 32768));
    assert!(high - low > count, "no room for {count} consecutive ports");
    'attempt: for _ in 0..1000 {
        let start = low + (random_u64() % u64::from(high - low - count)) as u16;
        let range = start..start + count;
        if range.clone().any(|p| taken.contains_key(&p)) {
            continue;
        }
        let mut locks = Vec::with_capacity(usize::from(count));
        for port in range.clone() {
            match lock(port) {
                Some(l) if bindable(port) => locks.push((port, l)),
                _ => continue 'attempt,
            }
        }
        taken.extend(locks);
        return start;
    }
    panic!("no {count} consecutive free loopback ports found after 1000 attempts");
}

/// Does something accept TCP connections on 127.0.0.1:port?
pub fn is_listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(500),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_free() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let p = free_port();
            assert!(seen.insert(p), "port {p} handed out twice");
            assert!(!is_listening(p));
        }
    }
}
