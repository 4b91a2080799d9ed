//! `pgpilot check`: archiving works end to end. On the primary (or, from
//! a standby, on the primary it streams from): write a restore point,
//! switch to a new WAL segment, and wait until the completed segment is in
//! the repository. Exit 82 if it does not arrive within
//! `backup.archive_timeout` (pgBackRest's code, which the charm relies on).

use std::time::{Duration, Instant};

use super::session::{self, Session};
use crate::backup::{code, BackupError, ConfigArg, Context, Result};
use crate::repo::identity::{self, ClusterIdentity};
use crate::repo::layout::WalName;

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn main(args: CheckArgs, runtime: &tokio::runtime::Runtime) -> i32 {
    let config = args.config.config.clone();
    super::run(runtime, "check", &config, async |context| {
        check(&context).await?;
        Ok(code::OK)
    })
}

pub async fn check(context: &Context) -> Result<()> {
    let storage = context.storage();
    let started = Instant::now();
    let local = ClusterIdentity::from_data_dir(&context.config.postgresql.data_dir)
        .map_err(BackupError::Local)?;
    identity::ensure(storage, &context.layout, &local)
        .await
        .map_err(|e| BackupError::identity(storage, e))?;
    let session = Session::connect(&context.config).await?;
    let settings = &session.settings;
    let segment = if settings.in_recovery {
        let (host, port) = session.upstream().await.ok_or_else(|| {
            BackupError::Postgres(
                "this server is a standby that is not streaming: run check on the primary".into(),
            )
        })?;
        session::nudge_primary(&context.config, &host, port).await?
    } else {
        if settings.archive_mode == "off" {
            return Err(BackupError::Postgres(
                "archive_mode is off: WAL is not archived. Set archive_mode = on and \
                 archive_command to pgpilot archive-push."
                    .into(),
            ));
        }
        session::switch_wal(session.client()).await?
    };
    let wal = WalName::parse(&segment)
        .ok_or_else(|| BackupError::Postgres(format!("unexpected segment name {segment:?}")))?;
    let timeout = context.backup.archive_timeout();
    let deadline = Instant::now() + timeout;
    loop {
        let found = storage
            .list(&context.layout.wal_prefix(&wal))
            .await
            .map_err(|e| context.repo_err(e))?
            .iter()
            .any(|m| {
                context
                    .layout
                    .parse_wal_key(&m.key)
                    .is_some_and(|(w, _)| w == wal)
            });
        if found {
            println!(
                "check: archiving works: {segment} reached {} in {:.1} s",
                storage.location(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let archiver = if settings.in_recovery {
                String::new()
            } else {
                archiver_state(&session).await
            };
            return Err(BackupError::Timeout(format!(
                "WAL segment {segment} was not archived in {} within backup.archive_timeout \
                 ({} s){archiver}. Check archive_command (pgpilot archive-push with this \
                 configuration) and PostgreSQL's log.",
                storage.location(),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn archiver_state(session: &Session) -> String {
    match session
        .client()
        .query_one(
            "SELECT failed_count, last_failed_wal, last_failed_time::text, last_archived_wal \
             FROM pg_stat_archiver",
            &[],
        )
        .await
    {
        Ok(row) => format!(
            "; pg_stat_archiver: {} failures, last failed {} at {}, last archived {}",
            row.get::<_, i64>(0),
            row.get::<_, Option<String>>(1)
                .unwrap_or_else(|| "-".into()),
            row.get::<_, Option<String>>(2)
                .unwrap_or_else(|| "-".into()),
            row.get::<_, Option<String>>(3)
                .unwrap_or_else(|| "-".into()),
        ),
        Err(_) => String::new(),
    }
}
