//! One generated world in both emulators: Pendo usage generated from a seed and the Salesforce
//! org that matches it (Users, Accounts, Contacts, trial Opportunities). The one builder the
//! engine's tests, `usagesync demo` and `usagesync emulate` (and through it every benchmark)
//! start from, so that they all sync the same world.

use crate::pendo::{self, GenConfig, PendoConfig, PendoState};
use crate::salesforce::{self, SfState};

/// Why a world could not be built or served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Salesforce emulator refused the generated {sobject} {id}: {errors}")]
    Refused { sobject: &'static str, id: String, errors: String },
    #[error("failed to start the {emulator} emulator: {source}")]
    Start { emulator: &'static str, source: std::io::Error },
    #[error("generating the world failed: {0}")]
    Generate(#[from] tokio::task::JoinError),
}

/// A generated Pendo world, not yet served: what it was generated from and the Pendo state.
pub struct World {
    pub gen_config: GenConfig,
    pub pendo: PendoState,
}

impl World {
    /// Generates the Pendo world for `gen_config` (CPU-bound: seconds at 100,000 accounts).
    pub fn generate(gen_config: GenConfig) -> World {
        let pendo = PendoState::generated(PendoConfig::default(), &gen_config);
        World { gen_config, pendo }
    }

    /// [`World::generate`] off the async runtime's threads.
    ///
    /// # Errors
    /// [`Error::Generate`] when the generating task panicked.
    pub async fn generate_blocking(gen_config: GenConfig) -> Result<World, Error> {
        Ok(tokio::task::spawn_blocking(move || World::generate(gen_config)).await?)
    }

    /// Loads the Salesforce records that match this world into `sf`, in one transaction,
    /// parents before children. Returns the number of records loaded.
    ///
    /// # Errors
    /// [`Error::Refused`] for the first record the emulator's validation refused (nothing is
    /// kept then).
    pub fn seed_salesforce(&self, sf: &SfState) -> Result<usize, Error> {
        let Some(gc) = self.pendo.generated_from() else { return Ok(0) };
        let ctx =
            salesforce::store::WriteCtx { user_id: salesforce::store::INTEGRATION_USER_ID.into(), now: sf.clock.now() };
        let mut db = sf.db.lock();
        db.begin();
        let mut loaded = 0;
        // Streamed: a million-account org is never held as JSON besides the records it becomes.
        let seeded = salesforce::world::for_each_record(&gc, |sobject, record| {
            let Some(fields) = record.as_object() else { return Ok(()) };
            match db.seed(sobject, fields, &ctx) {
                Ok(_) => {
                    loaded += 1;
                    Ok(())
                }
                Err(errors) => {
                    Err(Error::Refused { sobject, id: record["Id"].to_string(), errors: format!("{errors:?}") })
                }
            }
        });
        if let Err(e) = seeded {
            db.rollback();
            return Err(e);
        }
        db.commit();
        Ok(loaded)
    }

    /// Serves this world on loopback ports the OS picks: a Salesforce emulator with `config`
    /// whose org is seeded to match, and the Pendo emulator. Dropping the result stops both.
    ///
    /// # Errors
    /// [`Error::Start`] when a port cannot be bound; [`Error::Refused`] as for
    /// [`World::seed_salesforce`].
    pub async fn serve(self, config: salesforce::Config) -> Result<Running, Error> {
        let sf =
            salesforce::spawn(config, false).await.map_err(|source| Error::Start { emulator: "Salesforce", source })?;
        self.seed_salesforce(&sf.state)?;
        let pendo = pendo::start("127.0.0.1:0", self.pendo)
            .await
            .map_err(|source| Error::Start { emulator: "Pendo", source })?;
        Ok(Running { gen_config: self.gen_config, salesforce: sf, pendo })
    }
}

/// Both emulators serving one generated world.
pub struct Running {
    /// What the Pendo world was generated from, to recompute what it holds.
    pub gen_config: GenConfig,
    pub salesforce: salesforce::Running,
    pub pendo: pendo::Running,
}

/// Generates the world for `gen_config` off the runtime's threads and serves it (see
/// [`World::serve`]).
///
/// # Errors
/// As [`World::generate_blocking`] and [`World::serve`].
pub async fn start(gen_config: GenConfig, config: salesforce::Config) -> Result<Running, Error> {
    World::generate_blocking(gen_config).await?.serve(config).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::ClockChange;
    use crate::salesforce::store::{INTEGRATION_USER_ID, WriteCtx};

    /// Seeding streams the org account by account; what it leaves must be the org
    /// [`crate::pendo::generate::salesforce_org`] describes, loaded object by object.
    #[test]
    fn streamed_seeding_loads_the_org_record_for_record() {
        let gc = GenConfig {
            seed: 5,
            accounts: 120,
            days: 10,
            anchor_day_ms: Some(1_767_225_600_000),
            hierarchies: true,
            ..GenConfig::default()
        };
        let world = World::generate(gc.clone());
        let frozen =
            ClockChange { now: chrono::DateTime::from_timestamp(1_767_000_000, 0), advance_seconds: None, live: false };
        let streamed = SfState::new(salesforce::Config::default());
        streamed.clock.apply(&frozen).unwrap();
        let n = world.seed_salesforce(&streamed).unwrap();

        let whole = SfState::new(salesforce::Config::default());
        let ctx = WriteCtx { user_id: INTEGRATION_USER_ID.into(), now: streamed.clock.now() };
        let org = crate::pendo::generate::salesforce_org(&gc);
        let mut db = whole.db.lock();
        for sobject in ["User", "Account", "Contact", "Opportunity"] {
            for r in &org[sobject] {
                db.seed(sobject, r.as_object().unwrap(), &ctx).unwrap();
            }
        }
        assert_eq!(n, org.values().map(Vec::len).sum::<usize>());
        let streamed = streamed.db.lock();
        for sobject in ["User", "Account", "Contact", "Opportunity"] {
            let a: Vec<_> = streamed.records(sobject).collect();
            let b: Vec<_> = db.records(sobject).collect();
            assert_eq!(a, b, "{sobject}");
        }
        assert!(streamed.records("Account").any(|r| !r.get("ParentId").is_null()));
    }
}
