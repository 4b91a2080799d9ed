//! The Unix socket a fixture's stand-in tool talks to (snapd's `snapctl`,
//! Juju's hook tools): an accept loop on its own thread, one thread per
//! request (a request may take a while, e.g. a service restart), stopped and
//! the socket file removed on drop.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;

/// The listening socket and its thread.
pub struct SocketServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketServer {
    /// Listen on `path` (mode `mode`) and hand every connection to `serve`.
    pub fn start<F>(path: &Path, mode: u32, serve: F) -> anyhow::Result<SocketServer>
    where
        F: Fn(UnixStream) + Send + Sync + 'static,
    {
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let serve = Arc::clone(&serve);
                std::thread::spawn(move || serve(stream));
            }
        });
        Ok(SocketServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; if that fails, leave the thread be.
        let woken = UnixStream::connect(&self.path).is_ok();
        if let Some(thread) = self.thread.take() {
            if woken {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The server's side: the request line as JSON.
pub fn read_request(stream: &UnixStream) -> anyhow::Result<serde_json::Value> {
    use std::io::{BufRead, BufReader};
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

/// The strings of a JSON array (`args`), nothing for anything else.
pub fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The server's side: write the answer line `{"stdout", "stderr",
/// "exit-code"}` that [`relay`] prints.
pub fn answer(stream: &UnixStream, stdout: &str, stderr: &str, code: i32) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = serde_json::to_vec(&serde_json::json!({
        "stdout": stdout,
        "stderr": stderr,
        "exit-code": code,
    }))?;
    out.push(b'\n');
    let mut stream = stream;
    stream.write_all(&out)
}

/// The stand-in tool's side: send one JSON line, read one JSON line back.
pub fn request(path: &Path, body: &serde_json::Value) -> std::io::Result<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = UnixStream::connect(path)?;
    let mut line = serde_json::to_vec(body)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}

/// Print a reply's stdout and stderr and exit with its exit code, as the
/// real tool would.
pub fn relay(reply: &serde_json::Value) -> ! {
    use std::io::Write;
    print!("{}", reply["stdout"].as_str().unwrap_or_default());
    eprint!("{}", reply["stderr"].as_str().unwrap_or_default());
    let _ = std::io::stdout().flush();
    std::process::exit(reply["exit-code"].as_i64().unwrap_or(1) as i32);
}
