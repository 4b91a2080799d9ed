//! What the ctl verbs share: calling members' REST APIs (URLs from their
//! member keys in etcd), asking for confirmation, printing.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use axum::http::Method;

use super::{CtlError, Target};
use crate::client::{base_url, ApiClient, Reply};
use crate::cluster::{ClusterView, Member};

/// A client for the members' APIs with the target's TLS settings and
/// credentials; `timeout` bounds each request.
pub fn client(target: &Target, timeout: Duration) -> Result<ApiClient, CtlError> {
    let client = ApiClient::new(&target.api.tls, timeout, Duration::from_secs(5))
        .map_err(|e| CtlError::usage(format!("REST API client: {e}")))?;
    Ok(match &target.api.credentials {
        Some((user, password)) => client.with_basic_auth(user, password),
        None => client,
    })
}

/// `<member's API>/<path>`.
pub fn url(member: &Member, path: &str) -> String {
    format!("{}{path}", base_url(&member.status.api_url))
}

/// Send the request to the first of `members` whose API answers at all
/// (an HTTP error status is an answer); the member that answered and its reply.
pub async fn call_first(
    client: &ApiClient,
    members: &[&Member],
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(String, Reply), CtlError> {
    let mut failures = Vec::new();
    for member in members {
        match client
            .request(method.clone(), &url(member, path), body)
            .await
        {
            Ok(reply) => return Ok((member.name.clone(), reply)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        return Err(CtlError::failure("no member to send the request to"));
    }
    Err(CtlError::failure(format!(
        "no member's REST API answered: {}",
        failures.join("; ")
    )))
}

/// The leader first, then the other members in name order.
pub fn leader_first(view: &ClusterView) -> Vec<&Member> {
    let mut members: Vec<&Member> = view.members.iter().collect();
    let leader = view.leader_name();
    members.sort_by_key(|m| (Some(m.name.as_str()) != leader, m.name.clone()));
    members
}

/// A member by name, or a failure naming the cluster's members.
pub fn member<'a>(view: &'a ClusterView, name: &str, scope: &str) -> Result<&'a Member, CtlError> {
    view.member(name).ok_or_else(|| {
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        CtlError::failure(format!(
            "{name} is not a member of cluster {scope} (members: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}

/// Ask `question` on the terminal unless `force`; without a terminal the
/// answer is no, and the caller is told to pass --force.
pub fn confirm(question: &str, force: bool) -> Result<(), CtlError> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::usage(format!(
            "{question} — this needs a confirmation and stdin is not a terminal: pass --force"
        )));
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "{question} [y/N]: ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CtlError::failure(format!("cannot read the answer: {e}")))?;
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(CtlError::failure("aborted"))
    }
}

pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), CtlError> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CtlError::failure(format!("cannot write the output: {e}"))),
    }
}

/// A reply's body for a message: trimmed, or the status when empty.
pub fn body_text(reply: &Reply) -> String {
    let body = reply.body.trim();
    if body.is_empty() {
        format!("HTTP {}", reply.status)
    } else {
        body.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_answers() {
        assert!(is_yes("y\n"));
        assert!(is_yes(" YES "));
        assert!(!is_yes("\n"));
        assert!(!is_yes("no"));
    }
}
