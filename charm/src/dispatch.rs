//! One run of `dispatch`: observe, decide, apply, and the exit status.
//!
//! Exit non-zero only where Juju should retry: Juju's own tools or the snap
//! failing. An unknown hook is logged and exits 0; an action always exits 0
//! (its failure is reported with action-fail).

use crate::actions::{plan_action, ACTIONS};
use crate::apply::{apply, apply_action, Applied, Target};
use crate::context::{Event, HookContext};
use crate::observe::{observe, HostFacts, Observed};
use crate::reconcile::reconcile;
use crate::snap::SnapDriver;
use crate::tools::{HookTools, LogLevel};

/// How dispatch ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// Exit 1: the hook fails and Juju retries it.
    Retry(String),
}

impl Exit {
    pub fn code(&self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Retry(_) => 1,
        }
    }
}

pub fn run(
    ctx: &HookContext,
    tools: &dyn HookTools,
    snap: &dyn SnapDriver,
    host: HostFacts,
) -> Exit {
    if let Event::Unknown { hook } = &ctx.event {
        if !ctx.disable_file().exists() {
            let _ = tools.juju_log(
                LogLevel::Info,
                &format!("hook {hook}: not handled by this charm, nothing to do"),
            );
            return Exit::Success;
        }
    }
    if let Event::Action { name, .. } = &ctx.event {
        if !ACTIONS.contains(&name.as_str()) {
            // Nothing to observe for an action this charm does not have.
            let plan = plan_action(&Observed::empty(ctx, host));
            let message = plan.failure.unwrap_or_default();
            return match tools.action_fail(&message) {
                Ok(()) => Exit::Success,
                Err(e) => Exit::Retry(format!("{}: {e}", ctx.dispatch_path)),
            };
        }
    }
    let observed = match observe(ctx, tools, snap, host) {
        Ok(o) => o,
        Err(e) => {
            let message = format!("{}: cannot read the unit's state: {e}", ctx.dispatch_path);
            if ctx.event.is_action() {
                let _ = tools.action_fail(&message);
                return Exit::Success;
            }
            let _ = tools.juju_log(LogLevel::Error, &message);
            return Exit::Retry(message);
        }
    };
    let target = Target {
        tools,
        snap,
        relation_id: observed.peer.as_ref().map(|p| p.relation_id.as_str()),
    };
    if ctx.event.is_action() {
        let plan = plan_action(&observed);
        return match apply_action(&target, &plan) {
            Ok(()) => Exit::Success,
            // Reporting the result failed: Juju marks the action failed.
            Err(e) => Exit::Retry(format!("{}: {e}", ctx.dispatch_path)),
        };
    }
    let plan = reconcile(&observed);
    match apply(&target, &plan) {
        Ok(Applied::Done) | Ok(Applied::NotYet(_)) => Exit::Success,
        Err(e) => {
            let message = format!("{}: {e}", ctx.dispatch_path);
            let _ = tools.juju_log(LogLevel::Error, &message);
            Exit::Retry(message)
        }
    }
}
