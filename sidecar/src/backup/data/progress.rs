//! Progress of a long command: a bar on a terminal (stderr), a log line
//! every ten seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Shared {
    what: String,
    total: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

/// Counts bytes done; dropping it (or [`Progress::finish`]) ends the display.
pub struct Progress {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Erase the bar's line before printing something else.
pub fn clear_line() {
    if tty() {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

impl Shared {
    fn line(&self) -> (String, f64) {
        let total = self.total.load(Ordering::Relaxed).max(1);
        let done = self.done.load(Ordering::Relaxed).min(total);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / MIB / secs;
        let fraction = done as f64 / total as f64;
        let eta = if done > 0 {
            let left = (total - done) as f64 / (done as f64 / secs);
            format!("{left:.0}s")
        } else {
            "?".into()
        };
        (
            format!(
                "{}: {:.0}/{:.0} MiB, {rate:.0} MiB/s, {eta} left",
                self.what,
                done as f64 / MIB,
                total as f64 / MIB
            ),
            fraction,
        )
    }
}

impl Progress {
    pub fn start(what: &str, total: u64) -> Progress {
        let shared = Arc::new(Shared {
            what: what.to_string(),
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let on_tty = tty();
                let tick = Duration::from_millis(if on_tty { 200 } else { 500 });
                let mut last_log = Instant::now();
                while !worker.stop.load(Ordering::Relaxed) {
                    // Woken early by `stop`, so that finishing does not wait a tick.
                    std::thread::park_timeout(tick);
                    if worker.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (text, fraction) = worker.line();
                    if on_tty {
                        let width = 30;
                        let filled = ((fraction * width as f64) as usize).min(width);
                        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
                        let _ = write!(
                            std::io::stderr(),
                            "\r\x1b[K[{bar}] {:>3.0}% {text}",
                            fraction * 100.0
                        );
                    } else if last_log.elapsed() >= Duration::from_secs(10) {
                        last_log = Instant::now();
                        tracing::info!(percent = (fraction * 100.0) as u32, "{text}");
                    }
                }
                if on_tty {
                    clear_line();
                }
            })
            .ok();
        Progress { shared, thread }
    }

    /// A handle the worker threads can count with.
    pub fn counter(&self) -> Counter {
        Counter(self.shared.clone())
    }

    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone)]
pub struct Counter(Arc<Shared>);

impl Counter {
    pub fn add(&self, bytes: u64) {
        self.0.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// `123.4 MiB`
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// MiB/s of `bytes` over `elapsed`.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / MIB / elapsed.as_secs_f64().max(0.001)
    )
}
