//! `dispatch`: Juju runs it for every hook and action of the charm.

use pgpilot_charm::context::HookContext;
use pgpilot_charm::dispatch::{run, Exit};
use pgpilot_charm::snap::SnapCli;
use pgpilot_charm::tools::ProcessTools;

fn main() {
    let ctx = match HookContext::from_process_env() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("dispatch: {e}");
            std::process::exit(2);
        }
    };
    let host = match pgpilot_charm::host::gather(&ctx.unit, &ctx.charm_dir) {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "{}: cannot read this machine's facts: {e}",
                ctx.dispatch_path
            );
            std::process::exit(1);
        }
    };
    let exit = run(&ctx, &ProcessTools::new(), &SnapCli::default(), host);
    if let Exit::Retry(message) = &exit {
        eprintln!("{message}");
    }
    std::process::exit(exit.code());
}
