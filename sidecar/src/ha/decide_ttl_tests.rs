//! Table tests of the decisions that used to be taken outside
//! [`decide`]: moving the keys to a lease of a new `ttl`, and whether an
//! operator's restart brings PostgreSQL back as the primary.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_new_ttl_moves_the_keys_first_unless_writes_must_stop() {
    let shorter = |mut l: Local| {
        l.lease_ttl = Some(Duration::from_secs(30));
        l
    };
    let ttl = vec![Action::ApplyTtl {
        ttl: Duration::from_secs(10),
    }];
    let mut expiring = shorter(local(initialized(), primary(100)));
    expiring.lease_left = Some(2);
    let mut cut_off = shorter(local(initialized(), primary(100)));
    cut_off.store_reachable = false;
    check(
        "ttl changed in the cluster configuration",
        vec![
            (
                "leader: keys move before the chores",
                led_by("me").await,
                shorter(local(initialized(), primary(100))),
                ttl.clone(),
            ),
            (
                "replica: keys move before anything else",
                led_by("a").await,
                shorter(local(initialized(), replica(100))),
                ttl,
            ),
            (
                "lease ending: writes stop first (invariant 1), keys move next cycle",
                led_by("me").await,
                expiring,
                vec![Action::Demote],
            ),
            (
                "etcd does not answer: nothing to move",
                led_by("me").await,
                cut_off,
                vec![],
            ),
            (
                "same ttl: the usual decision",
                led_by("me").await,
                local(initialized(), primary(100)),
                vec![Action::LeaderChores],
            ),
        ],
    );
}

#[test]
fn a_restart_comes_back_as_primary_only_with_the_key_and_the_lease() {
    let rows = [
        ((true, true, true), true, "primary, leading, lease alive"),
        ((true, true, false), false, "lease not provable: standby"),
        ((true, false, true), false, "another leads: standby"),
        ((false, true, true), false, "was a standby: stays one"),
    ];
    for ((was_primary, leading, lease), want, why) in rows {
        assert_eq!(
            restart_as_primary(was_primary, leading, lease),
            want,
            "{why}"
        );
    }
}
