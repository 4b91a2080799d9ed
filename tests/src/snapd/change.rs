//! What `snap install`, `snap set` and a refresh report.

/// A snapd change that failed, worded as `snap` prints it (after "error: ").
#[derive(Debug, Clone)]
pub struct ChangeError {
    /// The task, e.g. `Run configure hook of "charmed-postgresql" snap`.
    pub task: String,
    /// Why, e.g. `run hook "configure": invalid pgpilot.port: ...`.
    pub reason: String,
    /// A failed hook's output (stdout and stderr together, as snapd collects it).
    pub hook_output: Option<String>,
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot perform the following tasks:\n- {} ({})",
            self.task, self.reason
        )
    }
}

impl std::error::Error for ChangeError {}

impl ChangeError {
    /// The failed change in an error from this module, if that is what it is.
    pub fn of(err: &anyhow::Error) -> Option<&ChangeError> {
        err.downcast_ref::<ChangeError>()
    }

    /// What `snap set` prints on stderr.
    pub fn cli_message(&self) -> String {
        format!("error: {self}")
    }
}

/// A `snap set`/`snap unset` that went through.
#[derive(Debug, Clone)]
pub struct SetOutcome {
    /// What the configure hook printed (stdout and stderr together).
    pub hook_output: String,
    /// The service commands it queued, carried out after it succeeded
    /// (e.g. `restart sleeper`).
    pub services: Vec<String>,
}
