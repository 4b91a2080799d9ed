//! `snapctl` for the snapd fixture (tests/src/snapd): installed in each
//! machine as ROOT/usr/bin/snapctl, it sends its arguments and the caller's
//! SNAP_COOKIE (or SNAP_CONTEXT) to ROOT/run/snapd-snap.socket, where the
//! test process answers as snapd would, and prints the answer.

use std::path::PathBuf;

fn socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PGPILOT_SNAPD_SOCKET") {
        return PathBuf::from(path);
    }
    // ROOT/usr/bin/snapctl → ROOT/run/snapd-snap.socket
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map(|root| root.join("run/snapd-snap.socket"))
        .unwrap_or_else(|| PathBuf::from("/run/snapd-snap.socket"))
}

fn main() {
    let cookie = std::env::var("SNAP_COOKIE")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| std::env::var("SNAP_CONTEXT").ok())
        .unwrap_or_default();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = socket_path();
    let reply =
        pgpilot_e2e::toolsock::request(&path, &serde_json::json!({"cookie": cookie, "args": args}));
    match reply {
        Ok(reply) => pgpilot_e2e::toolsock::relay(&reply),
        Err(e) => {
            eprintln!(
                "error: cannot communicate with server: Post \"http://localhost/v2/snapctl\": \
                 dial unix {}: {e}",
                path.display()
            );
            std::process::exit(1);
        }
    }
}
