//! snapd's `snapctl`, the only way a hook talks to snapd: configuration
//! (`get -d`, `set`) and services (`services`, `restart`).

use std::process::Command;

use serde_json::Value;

fn run(args: &[String]) -> Result<String, String> {
    let output = Command::new("snapctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run snapctl: {e} (this command runs as a snap hook)"))?;
    if !output.status.success() {
        return Err(format!(
            "snapctl {} failed: {}",
            args.first().map(String::as_str).unwrap_or(""),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| "snapctl printed something not UTF-8".into())
}

/// `snapctl get -d KEY...`: a JSON object with one entry per key; a key
/// never set comes back absent, null or "" depending on snapd's version:
/// all three read as "not set".
pub fn get_document(keys: &[&str]) -> Result<Value, String> {
    let mut args = vec!["get".to_string(), "-d".to_string()];
    args.extend(keys.iter().map(|k| k.to_string()));
    let text = run(&args)?;
    serde_json::from_str(&text).map_err(|e| format!("snapctl get -d printed no JSON document: {e}"))
}

/// `snapctl set KEY=VALUE...` (values as JSON text, which snapd stores typed).
pub fn set(pairs: &[(String, Value)]) -> Result<(), String> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut args = vec!["set".to_string()];
    for (key, value) in pairs {
        let text = match value {
            Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
            other => other.to_string(),
        };
        args.push(format!("{key}={text}"));
    }
    run(&args).map(|_| ())
}

/// `snapctl services NAME...` → (name, active), from snapd's table
/// `Service  Startup  Current  Notes`.
pub fn services(names: &[String]) -> Result<Vec<(String, bool)>, String> {
    let mut args = vec!["services".to_string()];
    args.extend(names.iter().cloned());
    Ok(parse_services(&run(&args)?))
}

pub fn parse_services(table: &str) -> Vec<(String, bool)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let name = cols.next()?;
            let _startup = cols.next()?;
            let current = cols.next()?;
            Some((name.to_string(), current == "active"))
        })
        .collect()
}

/// `snapctl restart NAME...` (snapd carries it out when the hook ends).
pub fn restart(names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let mut args = vec!["restart".to_string()];
    args.extend(names.iter().cloned());
    run(&args).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_snapds_services_table() {
        let table = "Service                       Startup   Current   Notes\n\
                     charmed-postgresql.etcd       enabled   active    -\n\
                     charmed-postgresql.pgbouncer  disabled  inactive  -\n";
        assert_eq!(
            super::parse_services(table),
            vec![
                ("charmed-postgresql.etcd".to_string(), true),
                ("charmed-postgresql.pgbouncer".to_string(), false)
            ]
        );
    }
}
