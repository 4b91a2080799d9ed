//! The hook tools of the Juju fixture (tests/src/juju), one multi-call
//! binary: installed per unit as symlinks named after each tool
//! (`config-get`, `relation-set`, ...) in a directory first on the hook's
//! PATH, it sends its name, arguments, stdin (for `--file -`) and
//! `JUJU_CONTEXT_ID` to the socket at `JUJU_AGENT_SOCKET_ADDRESS`, where the
//! test process answers as the unit agent would, and prints the answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
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
    let reply = (|| -> std::io::Result<serde_json::Value> {
        let mut stream = UnixStream::connect(&socket)?;
        let mut request = serde_json::to_vec(&serde_json::json!({
            "context": context, "tool": tool, "args": args, "stdin": stdin,
        }))?;
        request.push(b'\n');
        stream.write_all(&request)?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    })();
    match reply {
        Ok(reply) => {
            print!("{}", reply["stdout"].as_str().unwrap_or_default());
            eprint!("{}", reply["stderr"].as_str().unwrap_or_default());
            let _ = std::io::stdout().flush();
            std::process::exit(reply["exit-code"].as_i64().unwrap_or(1) as i32);
        }
        Err(e) => {
            eprintln!(
                "ERROR cannot connect to the unit agent at {}: {e}",
                Path::new(&socket).display()
            );
            std::process::exit(1);
        }
    }
}
