//! The units' etcd over TLS: the stages the leader drives a running
//! cluster through, and what each stage asks of a unit
//! (docs/charm-relations.md, `certificates`, "etcd over TLS"). Pure: the
//! leader records the stage in the peer application bag, each unit its
//! etcd [`Level`] in its unit bag.
//!
//! Up: `loaded` (every member restarts etcd with its certificate loaded,
//! peers still http, clients on http and https), `clients` (pgpilot's
//! endpoints to https, a rolling pgpilot restart), `on` (one member at a
//! time: `member update` to its https peer URL, then an etcd restart with
//! https peers and https-only clients). Down: `unpeer`, `unclients`, `off`,
//! the same steps backwards. One etcd restart at a time, so that quorum
//! never loses two members.

pub use crate::etcd::Level;

/// The stage the leader records (`etcd-tls` in the peer app bag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Off,
    Loaded,
    Clients,
    On,
    Unpeer,
    Unclients,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Off => "",
            Stage::Loaded => "loaded",
            Stage::Clients => "clients",
            Stage::On => "on",
            Stage::Unpeer => "unpeer",
            Stage::Unclients => "unclients",
        }
    }

    /// An unknown value reads as `off` only when empty; anything else is
    /// kept as the nearest safe stage (TLS loaded, nothing moved).
    pub fn parse(value: Option<&str>) -> Stage {
        match value.unwrap_or_default() {
            "" => Stage::Off,
            "clients" => Stage::Clients,
            "on" => Stage::On,
            "unpeer" => Stage::Unpeer,
            "unclients" => Stage::Unclients,
            _ => Stage::Loaded,
        }
    }

    /// Whether pgpilot and the charm reach etcd over https in this stage.
    pub fn clients_https(self) -> bool {
        matches!(self, Stage::Clients | Stage::On | Stage::Unpeer)
    }

    /// Whether a new member may be admitted now, and with an https peer
    /// URL (`Some(true)`): in `off`, plain; in `on` once every member runs
    /// https; never half-way.
    pub fn admission(self, units: &[UnitView]) -> Option<bool> {
        match self {
            Stage::Off => Some(false),
            Stage::On if units.iter().all(|u| u.peer_https && u.level == Level::On) => Some(true),
            _ => None,
        }
    }
}

/// The level a unit's etcd should run at: `peer_https` is its peer URL in
/// the leader's member list (changed by `member update` before the unit
/// restarts).
pub fn wanted_level(stage: Stage, peer_https: bool) -> Level {
    match stage {
        Stage::Off => Level::Plain,
        Stage::Loaded | Stage::Clients | Stage::Unclients => Level::Loaded,
        Stage::On | Stage::Unpeer if peer_https => Level::On,
        Stage::On | Stage::Unpeer => Level::Loaded,
    }
}

/// One unit as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    /// Its etcd member name.
    pub name: String,
    /// The level its etcd runs at (its unit bag).
    pub level: Level,
    /// Its peer URL in the member list is https.
    pub peer_https: bool,
    /// Its certificate is in force (its unit bag).
    pub has_certificate: bool,
    /// It runs pgpilot with this generation's configuration.
    pub applied: bool,
}

/// What the leader does in this hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub stage: Stage,
    /// `member update` of this member to an https (`true`) or http peer
    /// URL, recorded in the member list in the same hook.
    pub peer_update: Option<(String, bool)>,
    /// The one unit that may restart its etcd now.
    pub grant: Option<String>,
}

/// The leader's next move. `wanted`: the certificates relation is there;
/// `granted`: the unit granted an etcd restart earlier. `units`: the
/// admitted members. A unit without its certificate holds the way up
/// (nothing moves back for it: TLS stays where it is).
pub fn decide(stage: Stage, wanted: bool, units: &[UnitView], granted: Option<&str>) -> Decision {
    let ready = !units.is_empty() && units.iter().all(|u| u.has_certificate);
    let settled = |stage: Stage| {
        units
            .iter()
            .all(|u| u.level == wanted_level(stage, u.peer_https))
    };
    let all_applied = units.iter().all(|u| u.applied);
    let stage = match stage {
        Stage::Off if wanted && ready => Stage::Loaded,
        Stage::Loaded if !wanted => Stage::Off,
        Stage::Loaded if settled(Stage::Loaded) => Stage::Clients,
        Stage::Clients if !wanted => Stage::Unclients,
        Stage::Clients if all_applied => Stage::On,
        Stage::On if !wanted => Stage::Unpeer,
        Stage::Unpeer if wanted => Stage::On,
        Stage::Unpeer if units.iter().all(|u| !u.peer_https) && settled(Stage::Unpeer) => {
            Stage::Unclients
        }
        Stage::Unclients if wanted && ready => Stage::Clients,
        Stage::Unclients if all_applied => Stage::Off,
        s => s,
    };
    let mut decision = Decision {
        stage,
        peer_update: None,
        grant: None,
    };
    // A granted unit keeps its turn until it runs the level it was given.
    if let Some(g) = granted {
        if let Some(u) = units.iter().find(|u| u.name == g) {
            if u.level != wanted_level(stage, u.peer_https) {
                decision.grant = Some(g.to_string());
                return decision;
            }
        }
    }
    if let Some(u) = units
        .iter()
        .find(|u| u.level != wanted_level(stage, u.peer_https))
    {
        decision.grant = Some(u.name.clone());
        return decision;
    }
    // Every unit runs its level: move the next peer URL.
    let https = match stage {
        Stage::On => true,
        Stage::Unpeer => false,
        _ => return decision,
    };
    if let Some(u) = units.iter().find(|u| u.peer_https != https) {
        decision.peer_update = Some((u.name.clone(), https));
        decision.grant = Some(u.name.clone());
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(n: usize, level: Level, peer_https: bool) -> UnitView {
        UnitView {
            name: format!("postgresql-{n}"),
            level,
            peer_https,
            has_certificate: true,
            applied: true,
        }
    }

    fn three(level: Level, peer_https: bool) -> Vec<UnitView> {
        (0..3).map(|n| unit(n, level, peer_https)).collect()
    }

    #[test]
    fn the_stages_up_one_unit_at_a_time() {
        // Off, every certificate in force: load them.
        let d = decide(Stage::Off, true, &three(Level::Plain, false), None);
        assert_eq!(d.stage, Stage::Loaded);
        assert_eq!(d.grant.as_deref(), Some("postgresql-0"));
        // A unit without its certificate yet: nothing moves.
        let mut waiting = three(Level::Plain, false);
        waiting[2].has_certificate = false;
        let d = decide(Stage::Off, true, &waiting, None);
        assert_eq!((d.stage, d.grant), (Stage::Off, None));
        // The granted unit keeps its turn until it runs the level.
        let mut some = three(Level::Plain, false);
        some[0].level = Level::Loaded;
        let d = decide(Stage::Loaded, true, &some, Some("postgresql-0"));
        assert_eq!(d.grant.as_deref(), Some("postgresql-1"));
        let d = decide(
            Stage::Loaded,
            true,
            &three(Level::Plain, false),
            Some("postgresql-2"),
        );
        assert_eq!(d.grant.as_deref(), Some("postgresql-2"));
        // All loaded: clients to https; then, once every pgpilot runs it,
        // the peer URLs one at a time.
        let d = decide(Stage::Loaded, true, &three(Level::Loaded, false), None);
        assert_eq!((d.stage, d.grant.clone()), (Stage::Clients, None));
        assert!(d.stage.clients_https());
        let mut rolling = three(Level::Loaded, false);
        rolling[1].applied = false;
        assert_eq!(
            decide(Stage::Clients, true, &rolling, None).stage,
            Stage::Clients
        );
        let d = decide(Stage::Clients, true, &three(Level::Loaded, false), None);
        assert_eq!(d.stage, Stage::On);
        assert_eq!(d.peer_update, Some(("postgresql-0".into(), true)));
        assert_eq!(d.grant.as_deref(), Some("postgresql-0"));
        // postgresql-0's peer URL moved, its etcd not restarted yet: it
        // keeps the turn, no other peer URL moves.
        let mut moving = three(Level::Loaded, false);
        moving[0].peer_https = true;
        let d = decide(Stage::On, true, &moving, Some("postgresql-0"));
        assert_eq!(
            (d.peer_update, d.grant.as_deref()),
            (None, Some("postgresql-0"))
        );
        moving[0].level = Level::On;
        let d = decide(Stage::On, true, &moving, Some("postgresql-0"));
        assert_eq!(d.peer_update, Some(("postgresql-1".into(), true)));
        // Done: nothing to do.
        let d = decide(Stage::On, true, &three(Level::On, true), None);
        assert_eq!((d.stage, d.peer_update, d.grant), (Stage::On, None, None));
    }

    #[test]
    fn the_stages_down_when_the_relation_goes() {
        let d = decide(Stage::On, false, &three(Level::On, true), None);
        assert_eq!(d.stage, Stage::Unpeer);
        assert_eq!(d.peer_update, Some(("postgresql-0".into(), false)));
        assert!(d.stage.clients_https());
        let d = decide(Stage::Unpeer, false, &three(Level::Loaded, false), None);
        assert_eq!((d.stage, d.grant.clone()), (Stage::Unclients, None));
        assert!(!d.stage.clients_https());
        let d = decide(Stage::Unclients, false, &three(Level::Loaded, false), None);
        assert_eq!(d.stage, Stage::Off);
        assert_eq!(d.grant.as_deref(), Some("postgresql-0"));
        let d = decide(Stage::Off, false, &three(Level::Plain, false), None);
        assert_eq!((d.stage, d.grant), (Stage::Off, None));
        // Removed half-way up: back the same way.
        let d = decide(Stage::Loaded, false, &three(Level::Loaded, false), None);
        assert_eq!(d.stage, Stage::Off);
        assert_eq!(
            decide(Stage::Clients, false, &three(Level::Loaded, false), None).stage,
            Stage::Unclients
        );
    }

    #[test]
    fn a_unit_without_its_certificate_holds_the_way_up_but_never_turns_back() {
        let mut waiting = three(Level::On, true);
        waiting[2].has_certificate = false;
        let d = decide(Stage::On, true, &waiting, None);
        assert_eq!((d.stage, d.peer_update, d.grant), (Stage::On, None, None));
        let mut waiting = three(Level::Loaded, false);
        waiting[0].has_certificate = false;
        assert_eq!(
            decide(Stage::Unclients, true, &waiting, None).stage,
            Stage::Off
        );
        // Back on half-way down: the peer URLs move up again.
        let mut half = three(Level::On, true);
        half[0].peer_https = false;
        half[0].level = Level::Loaded;
        let d = decide(Stage::Unpeer, true, &half, None);
        assert_eq!(d.stage, Stage::On);
        assert_eq!(d.peer_update, Some(("postgresql-0".into(), true)));
    }

    #[test]
    fn admission_only_at_rest() {
        assert_eq!(
            Stage::Off.admission(&three(Level::Plain, false)),
            Some(false)
        );
        assert_eq!(Stage::On.admission(&three(Level::On, true)), Some(true));
        let mut half = three(Level::On, true);
        half[1].level = Level::Loaded;
        assert_eq!(Stage::On.admission(&half), None);
        for s in [
            Stage::Loaded,
            Stage::Clients,
            Stage::Unpeer,
            Stage::Unclients,
        ] {
            assert_eq!(s.admission(&three(Level::Loaded, false)), None);
        }
    }

    #[test]
    fn levels_and_stages_read_back() {
        for s in [
            Stage::Off,
            Stage::Loaded,
            Stage::Clients,
            Stage::On,
            Stage::Unpeer,
            Stage::Unclients,
        ] {
            assert_eq!(Stage::parse(Some(s.as_str())), s);
        }
        assert_eq!(Stage::parse(None), Stage::Off);
        assert_eq!(Stage::parse(Some("garbage")), Stage::Loaded);
        for l in [Level::Plain, Level::Loaded, Level::On] {
            assert_eq!(Level::parse(Some(l.as_str())), l);
        }
        assert_eq!(wanted_level(Stage::On, false), Level::Loaded);
        assert_eq!(wanted_level(Stage::Unpeer, true), Level::On);
    }
}
