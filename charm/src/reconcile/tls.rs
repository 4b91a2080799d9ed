//! The `certificates` relation, this unit's part (UNIT mode: every unit
//! asks for its own certificate): a private key in a unit-owned secret,
//! one request in our unit bag for the unit's address, and the provider's
//! certificate for that exact request put in force through the `tls.*`
//! snap keys (the snap reloads pgpilot and PostgreSQL: no restart). A
//! certificate past [`tls::RENEW_AT`] of its lifetime, a revoked one, or a
//! new address asks again with the same key; the certificate in force stays
//! until the new one comes. No relation (or relation-broken): TLS off.

use serde_json::Value;

use super::Reconciler;
use crate::context::{Event, RelationKind, CERTIFICATES_ENDPOINT};
use crate::peer;
use crate::plan::Step;
use crate::relation::RelationView;
use crate::tls::{self, Wanted};
use crate::tools::LogLevel;

impl Reconciler<'_> {
    /// The `tls.*` snap keys this unit should hold, and the steps of its
    /// certificate request.
    pub(super) fn tls_keys(&mut self, ip: &str) -> Vec<(String, Value)> {
        let o = self.o;
        let Some(relation) = current_relation(o.relations_on(CERTIFICATES_ENDPOINT), &o.event)
        else {
            self.set_unit(peer::UNIT_TLS_REQUESTED, "");
            return tls::snap_off().to_vec();
        };
        // Until a certificate answers the request: what is in force stays.
        let in_force = tls::snap_current(&o.snap_config)
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let wanted = Wanted::for_unit(&o.unit, ip);
        let key = match &o.tls_key {
            None => {
                self.request(relation, &wanted, None);
                return in_force;
            }
            Some(Err(why)) => {
                self.plan.log(
                    LogLevel::Warning,
                    format!("certificates: cannot read this unit's private key ({why}); trying again at the next hook"),
                );
                return in_force;
            }
            Some(Ok(key)) => key.clone(),
        };
        let requested = self.unit_value(peer::UNIT_TLS_REQUESTED) == Some(&wanted.fingerprint());
        let Some(csr) = tls::our_request(&relation.local_unit_data).filter(|_| requested) else {
            self.request(relation, &wanted, Some(key));
            return in_force;
        };
        let certificates = match tls::provider_certificates(&relation.remote_app_data) {
            Ok(c) => c,
            Err(e) => {
                self.plan
                    .log(LogLevel::Warning, format!("{}: {e}", relation.id));
                return in_force;
            }
        };
        match tls::certificate_for(&certificates, &csr) {
            None => in_force,
            Some(cert) if cert.revoked => {
                self.plan.log(
                    LogLevel::Warning,
                    format!("{}: our certificate was revoked: asking again", relation.id),
                );
                self.request(relation, &wanted, Some(key));
                in_force
            }
            Some(cert) => {
                let due = tls::validity(&cert.certificate)
                    .is_some_and(|(from, to)| tls::due_for_renewal(o.host.now, from, to));
                if due {
                    self.plan.log(
                        LogLevel::Info,
                        format!(
                            "{}: the certificate is due for renewal: asking again",
                            relation.id
                        ),
                    );
                    self.request(relation, &wanted, Some(key.clone()));
                }
                tls::snap_values(cert, &key.0).to_vec()
            }
        }
    }

    fn request(&mut self, relation: &RelationView, wanted: &Wanted, key: Option<tls::PrivateKey>) {
        self.plan.push(Step::RequestCertificate {
            relation_id: relation.id.clone(),
            wanted: wanted.clone(),
            key,
        });
        self.set_unit(peer::UNIT_TLS_REQUESTED, wanted.fingerprint());
    }
}

/// The `certificates` relation in force: not the one being broken.
pub(super) fn current_relation<'a>(
    relations: &'a [RelationView],
    event: &Event,
) -> Option<&'a RelationView> {
    relations.iter().find(|r| {
        !matches!(event, Event::Relation { endpoint, kind: RelationKind::Broken, relation_id, .. }
            if endpoint == CERTIFICATES_ENDPOINT && *relation_id == r.id)
    })
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
