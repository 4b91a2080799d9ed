//! The other applications' relations as one hook sees them (plain data):
//! one [`RelationView`] per relation of each endpoint in
//! [`crate::context::RELATION_ENDPOINTS`]. The peer relation is
//! [`crate::peer::PeerView`].

use std::collections::BTreeMap;

/// A databag: every value is a string (lists and maps as JSON text).
pub type Databag = BTreeMap<String, String>;

/// One relation to another application.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelationView {
    /// `database:7`.
    pub id: String,
    pub endpoint: String,
    /// The application at the other end (empty while Juju does not say).
    pub remote_app: String,
    /// Its application bag (the requests and answers of data interfaces).
    pub remote_app_data: Databag,
    /// Its units' bags, by unit name.
    pub remote_units: BTreeMap<String, Databag>,
    /// This application's bag: read by the leader only (Juju refuses it to
    /// the others), empty elsewhere.
    pub local_app_data: Databag,
    /// This unit's bag.
    pub local_unit_data: Databag,
}

impl RelationView {
    /// The number after the colon: `7` for `database:7`.
    pub fn number(&self) -> &str {
        self.id.rsplit_once(':').map(|(_, n)| n).unwrap_or(&self.id)
    }

    /// A non-empty value of the remote application's bag.
    pub fn remote(&self, key: &str) -> Option<&str> {
        self.remote_app_data
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Keys of `desired` whose value differs from `current`, plus keys of
/// `current` that `desired` lacks (as empty values, which delete): what
/// one relation-set must carry.
pub fn bag_changes(current: &Databag, desired: &Databag) -> Databag {
    let mut out: Databag = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in current.keys() {
        if !desired.contains_key(k) {
            out.insert(k.clone(), String::new());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::bag;

    #[test]
    fn changes_carry_new_and_changed_keys_and_delete_the_missing() {
        let current = bag(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let desired = bag(&[("a", "1"), ("b", "20"), ("d", "4")]);
        assert_eq!(
            bag_changes(&current, &desired),
            bag(&[("b", "20"), ("c", ""), ("d", "4")])
        );
        assert!(bag_changes(&desired, &desired).is_empty());
    }

    #[test]
    fn the_number_of_a_relation() {
        let r = RelationView {
            id: "database:7".into(),
            ..Default::default()
        };
        assert_eq!(r.number(), "7");
    }
}
