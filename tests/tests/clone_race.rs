//! A replica made while the leader is cut from etcd (issue 14, item 4).
//! Real PostgreSQL and etcd; the leader's etcd traffic goes through a
//! cuttable proxy (packets dropped, connections left hanging).
//!
//! The new replica is marked "not streamed since it was made" from the
//! moment its copy starts until its WAL receiver streams; while marked it
//! does not win a leader race against a replica that streamed (the table
//! tests of ha::decide hold the race itself). Here: it makes its slot on the
//! cut-off leader and streams at once, so the mark goes, and when the
//! leader's lease then runs out whoever wins has every row it had received.

use std::time::{Duration, Instant};

use pgpilot_e2e::faults::FaultCluster;

const READY: Duration = Duration::from_secs(120);
const REPLICATE: Duration = Duration::from_secs(60);

/// Remove everything inside `dir` (the member's data directory).
fn empty_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

async fn count(fc: &FaultCluster, i: usize) -> anyhow::Result<i64> {
    Ok(fc
        .query_one(i, "SELECT count(*)::text FROM e2e_clone")
        .await?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_cloned_while_the_leader_is_cut_streams_at_once_and_loses_nothing(
) -> anyhow::Result<()> {
    // ttl 20: the leader keeps its key (and PostgreSQL) for a while after
    // the cut, long enough for the new member to clone it.
    let fc = FaultCluster::builder()
        .members(3)
        .timing(20, 1, 3)
        .etcd_proxies()
        .start()
        .await?;
    let leader = fc.wait_ready(READY).await?;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &r in &others {
        fc.wait_streaming_to(leader, r, REPLICATE).await?;
    }
    let fresh = others[1];
    let fresh_name = fc.name(fresh).to_string();
    fc.kill_node(fresh).await?;
    empty_dir(&fc.member(fresh).data_dir)?;
    fc.execute(leader, "CREATE TABLE e2e_clone (id int PRIMARY KEY)")
        .await?;

    fc.proxy(leader).cut();
    let cut = Instant::now();
    fc.start_member(fresh)?;
    let streamed = fc
        .wait_streaming_to(leader, fresh, Duration::from_secs(15))
        .await;
    let streaming_after = cut.elapsed();
    // Rows the old leader acknowledges while the new replica streams.
    let mut acked = 0;
    if streamed.is_ok() {
        for id in 1..=200 {
            let sql = format!("INSERT INTO e2e_clone VALUES ({id})");
            if fc.execute(leader, &sql).await.is_err() {
                break;
            }
            acked = id;
        }
    }
    let received = count(&fc, fresh).await.unwrap_or(-1);
    let report = fc.get(fresh, "/patroni").await.map(|r| r.body);

    let new_leader = fc
        .wait_other_leader(&[leader], Duration::from_secs(90))
        .await;
    let mut problems = Vec::new();
    match &streamed {
        Ok(()) => eprintln!(
            "{fresh_name}: cloned while the leader was cut, streaming {:.2}s after the cut; \
             {acked} rows acknowledged, {received} received by it",
            streaming_after.as_secs_f64()
        ),
        Err(e) => problems.push(format!(
            "{fresh_name}, cloned while the leader was cut from etcd, does not stream: {e:#}"
        )),
    }
    match &report {
        Ok(body) if body.contains("not_streamed_since_clone") => problems.push(format!(
            "{fresh_name} streams but still reports not_streamed_since_clone: {body}"
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("{fresh_name}'s REST API does not answer: {e:#}")),
    }
    if !fc
        .member(fresh)
        .log()
        .contains("this replica streams from a leader now")
    {
        problems.push(format!(
            "{fresh_name} was not marked as new, or the mark did not go when it streamed"
        ));
    }
    match new_leader {
        Ok((winner, _)) => {
            let kept = count(&fc, winner).await.unwrap_or(-1);
            eprintln!(
                "new leader {} holds {kept} of the {acked} acknowledged rows",
                fc.name(winner)
            );
            if kept < received {
                problems.push(format!(
                    "new leader {} has {kept} rows, {fresh_name} had received {received}",
                    fc.name(winner)
                ));
            }
            if fc.status(leader, "/primary").await == Some(200) {
                problems.push("the old leader still answers /primary with 200".into());
            }
        }
        Err(e) => problems.push(format!("no new leader after the old one's lease: {e:#}")),
    }
    if received < 1 {
        problems.push(format!(
            "{fresh_name} received none of the rows written after it streamed ({received})"
        ));
    }
    fc.proxy(leader).heal();
    fc.verdict(&problems)
}
