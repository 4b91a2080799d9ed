//! The hook tools of the Juju fixture (tests/src/juju), one multi-call
//! binary: installed per unit as symlinks named after each tool
//! (`config-get`, `relation-set`, ...) in a directory first on the hook's
//! PATH, it sends its name, arguments, stdin (for `--file -`) and
//! `JUJU_CONTEXT_ID` to the socket at `JUJU_AGENT_SOCKET_ADDRESS`, where the
//! test process answers as the unit agent would, and prints the answer.

use std::io::Read;
use std::path::Path;

fn main() {
    let tool = std::env::args_os()
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.first().map(String::as_str) == Some("--host") {
        host_tool(&args[1..]);
    }
    if tool == "juju-tool" {
        eprintln!("juju-tool: run it through a symlink named after a hook tool (config-get, ...)");
        std::process::exit(2);
    }
    let context = std::env::var("JUJU_CONTEXT_ID").unwrap_or_default();
    let Some(socket) = std::env::var_os("JUJU_AGENT_SOCKET_ADDRESS") else {
        eprintln!("ERROR JUJU_AGENT_SOCKET_ADDRESS not set");
        std::process::exit(1);
    };
    // `--file -` (relation-set): the data comes on stdin.
    let reads_stdin = args.windows(2).any(|w| w[0] == "--file" && w[1] == "-")
        || args.iter().any(|a| a == "--file=-");
    let stdin = reads_stdin.then(|| {
        let mut text = String::new();
        let _ = std::io::stdin().read_to_string(&mut text);
        text
    });
    let reply = pgpilot_e2e::toolsock::request(
        Path::new(&socket),
        &serde_json::json!({
            "context": context, "tool": tool, "args": args, "stdin": stdin,
        }),
    );
    match reply {
        Ok(reply) => pgpilot_e2e::toolsock::relay(&reply),
        Err(e) => {
            eprintln!(
                "ERROR cannot connect to the unit agent at {}: {e}",
                Path::new(&socket).display()
            );
            std::process::exit(1);
        }
    }
}

/// `juju-tool --host SOCKET --unit UNIT TOOL ARGS...`: a machine command
/// (`snap`, `juju-exec`) of the simulated machine of UNIT, answered by the
/// test process on SOCKET. `snap run` passes its stdin and environment on.
fn host_tool(args: &[String]) -> ! {
    let (Some(socket), Some("--unit"), Some(unit), Some(tool)) = (
        args.first(),
        args.get(1).map(String::as_str),
        args.get(2),
        args.get(3),
    ) else {
        eprintln!("juju-tool --host SOCKET --unit UNIT TOOL ARGS...");
        std::process::exit(2);
    };
    let rest = &args[4..];
    let stdin = (tool == "snap" && rest.first().map(String::as_str) == Some("run")).then(|| {
        let mut text = String::new();
        let _ = std::io::stdin().read_to_string(&mut text);
        text
    });
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let reply = pgpilot_e2e::toolsock::request(
        Path::new(socket),
        &serde_json::json!({
            "unit": unit, "tool": tool, "args": rest, "stdin": stdin, "env": env,
        }),
    );
    match reply {
        Ok(reply) => pgpilot_e2e::toolsock::relay(&reply),
        Err(e) => {
            eprintln!("error: cannot reach the simulated machine at {socket}: {e}");
            std::process::exit(1);
        }
    }
}
