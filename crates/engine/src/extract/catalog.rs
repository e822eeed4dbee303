//! Feature names from Pendo's feature catalogue, so text a person reads (an alert's
//! description, an expansion Task) names features rather than showing their ids.

use std::collections::HashMap;

use pendo::{Apps, Expr, Pipeline, Source};

use super::{CoreFeatures, Extractor, Result, bad_row, text};

impl Extractor<'_> {
    /// Id → name of every feature in every app (one aggregation call).
    pub async fn feature_names(&self) -> Result<HashMap<String, String>> {
        const QUERY: &str = "feature names";
        let p = Pipeline::from_source(Source::Features { apps: Apps::All })
            .select(vec![("id", Expr::field("id")), ("name", Expr::field("name"))]);
        let rows = self.once(QUERY, &p).await?;
        rows.iter()
            .map(|r| {
                let id = text(r, "id").ok_or_else(|| bad_row(QUERY, "id", r))?;
                Ok((id.to_owned(), text(r, "name").unwrap_or_default().to_owned()))
            })
            .collect()
    }

    /// The core features' names, in id order: the configured ids, or the ones Pendo marks core.
    pub async fn core_feature_names(&self, core: &CoreFeatures) -> Result<Vec<String>> {
        let ids: Vec<String> = match core {
            CoreFeatures::Ids(ids) => ids.clone(),
            CoreFeatures::MarkedCore => {
                const QUERY: &str = "core feature names";
                let p = Pipeline::from_source(Source::Features { apps: Apps::All })
                    .filter(Expr::field("isCoreEvent").eq(true))
                    .select(vec![("id", Expr::field("id")), ("name", Expr::field("name"))]);
                let rows = self.once(QUERY, &p).await?;
                let mut named: Vec<(String, String)> = rows
                    .iter()
                    .filter_map(|r| Some((text(r, "id")?.to_owned(), text(r, "name").unwrap_or_default().to_owned())))
                    .collect();
                named.sort();
                return Ok(named
                    .into_iter()
                    .map(|(id, name)| if name.trim().is_empty() { id } else { name })
                    .collect());
            }
        };
        let names = self.feature_names().await?;
        Ok(ids.iter().map(|id| names.get(id).filter(|n| !n.trim().is_empty()).unwrap_or(id).clone()).collect())
    }
}
