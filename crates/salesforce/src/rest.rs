//! REST resources under `/services/data/vNN.0/`, one module per resource family; each adds
//! methods to [`crate::Client`].

pub mod collections;
pub mod composite;
pub mod describe;
pub mod query;
pub mod sobjects;

use crate::error::{Error, Result};
use crate::soql;

/// Rejects object names that could smuggle path segments or query syntax into a URL.
pub(crate) fn check_object(object: &str) -> Result<()> {
    if soql::is_valid_name(object) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("{object:?} is not a valid sObject API name")))
    }
}

/// Rejects field names that are not plain API names.
pub(crate) fn check_field(field: &str) -> Result<()> {
    if soql::is_valid_name(field) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("{field:?} is not a valid field API name")))
    }
}

/// Serialises a record to a JSON object, or explains why it is not one.
pub(crate) fn to_object<T: serde::Serialize + ?Sized>(
    record: &T,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(record) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::InvalidInput(format!("a record must serialise to a JSON object, not {other}"))),
        Err(e) => Err(Error::InvalidInput(format!("record is not serialisable: {e}"))),
    }
}
