//! Faithful local emulators of the Salesforce and Pendo APIs.
//!
//! They speak the real wire protocols closely enough that third-party clients (simple-salesforce,
//! jsforce, tap-pendo) work against them unchanged, so that usagesync's tests, demo and benchmarks
//! never need a real org. The emulators share no code with usagesync's own clients: each side is
//! written from the documented API and checks the other.
//!
//! # Layout
//! - [`salesforce`]: the org model, REST, OAuth, SOQL, accounting, faults, admin.
//! - [`server`]: the accept loop (plain or TLS) shared by both emulators.
//! - [`clock`]: the controllable clock.
//! - [`seed_matching_org`]: one generated world in both emulators.

// Handlers return early with a ready HTTP response as their error; those paths are cold and
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod pendo;
pub mod salesforce;
pub mod server;

/// Loads the Salesforce records generated with a Pendo world (Users, Accounts, Contacts, trial
/// Opportunities) into the Salesforce emulator, in one transaction: the world the demo, the
/// tests and the benchmarks sync. Returns the number of records loaded.
///
/// # Errors
/// The emulator's validation errors for the first record it refused (nothing is kept then).
pub fn seed_matching_org(sf: &salesforce::SfState, pendo: &pendo::PendoState) -> Result<usize, String> {
    let org = pendo.salesforce_org();
    let ctx =
        salesforce::store::WriteCtx { user_id: salesforce::store::INTEGRATION_USER_ID.into(), now: sf.clock.now() };
    let mut db = sf.db.lock();
    db.begin();
    let mut loaded = 0;
    for sobject in ["User", "Account", "Contact", "Opportunity"] {
        for record in org.get(sobject).into_iter().flatten() {
            let Some(fields) = record.as_object() else { continue };
            if let Err(errors) = db.seed(sobject, fields, &ctx) {
                db.rollback();
                return Err(format!("the generated {sobject} {} was refused: {errors:?}", record["Id"]));
            }
            loaded += 1;
        }
    }
    db.commit();
    Ok(loaded)
}
