//! The unit agent's hook-tool socket (`JUJU_AGENT_SOCKET_ADDRESS`): the
//! fixture's `juju-tool` (src/bin/juju-tool.rs) sends one JSON line
//! `{"context": "...", "tool": "...", "args": [...], "stdin": ...}` and gets
//! back one JSON line `{"stdout": "...", "stderr": "...", "exit-code": N}`.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::tools::{self, Inner};
use crate::toolsock::SocketServer;

/// The listening socket: `juju-tool` requests served by [`serve_one`].
pub struct Server {
    _socket: SocketServer,
}

impl Server {
    pub fn start(inner: Arc<Mutex<Inner>>, path: &Path) -> anyhow::Result<Server> {
        let server = SocketServer::start(path, 0o600, move |stream| {
            let _ = serve_one(&inner, stream);
        })?;
        Ok(Server { _socket: server })
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
    crate::toolsock::answer(&stream, &reply.stdout, &reply.stderr, reply.code)?;
    Ok(())
}
