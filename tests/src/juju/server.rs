//! The unit agent's hook-tool socket (`JUJU_AGENT_SOCKET_ADDRESS`): the
//! fixture's `juju-tool` (src/bin/juju-tool.rs) sends one JSON line
//! `{"context": "...", "tool": "...", "args": [...], "stdin": ...}` and gets
//! back one JSON line `{"stdout": "...", "stderr": "...", "exit-code": N}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::tools::{self, Inner};

/// The listening socket and its thread.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(inner: Arc<Mutex<Inner>>, path: &Path) -> anyhow::Result<Server> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let inner = Arc::clone(&inner);
                std::thread::spawn(move || {
                    let _ = serve_one(&inner, stream);
                });
            }
        });
        Ok(Server {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let woken = UnixStream::connect(&self.path).is_ok();
        if let Some(thread) = self.thread.take() {
            if woken {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve_one(inner: &Mutex<Inner>, stream: UnixStream) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let request: Value = serde_json::from_str(&line)?;
    let text = |key: &str| request[key].as_str().unwrap_or_default().to_string();
    let args: Vec<String> = request["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        tools::run(
            &mut inner,
            &text("context"),
            &text("tool"),
            &args,
            request["stdin"].as_str(),
        )
    };
    let mut out = serde_json::to_vec(&json!({
        "stdout": reply.stdout,
        "stderr": reply.stderr,
        "exit-code": reply.code,
    }))?;
    out.push(b'\n');
    (&stream).write_all(&out)?;
    Ok(())
}
