//! The unit agent's hook-tool socket (`JUJU_AGENT_SOCKET_ADDRESS`): the
//! fixture's `juju-tool` (src/bin/juju-tool.rs) sends one JSON line
//! `{"context": "...", "tool": "...", "args": [...], "stdin": ...}` and gets
//! back one JSON line `{"stdout": "...", "stderr": "...", "exit-code": N}`.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    let request = crate::toolsock::read_request(&stream)?;
    let text = |key: &str| request[key].as_str().unwrap_or_default().to_string();
    let args = crate::toolsock::strings(&request["args"]);
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
