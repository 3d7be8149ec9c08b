//! The rule every model-config reader follows, in one place: a field is either understood
//! (taken, checked and used), known to leave the computation unchanged (inert), or the model
//! is refused with an error naming the file, the field and its value. Nothing that could
//! change the math is skipped because the reader did not look at it.

use crate::{Result, RuntimeError};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// How a config value is written in an error: as the file would spell it.
pub(crate) trait FieldValue {
    fn show(&self) -> String;
}

impl FieldValue for serde_json::Value {
    fn show(&self) -> String {
        self.to_string()
    }
}

/// The fields of one config file, taken one by one as a reader understands them.
pub(crate) struct ConfigFields<V> {
    file: PathBuf,
    fields: BTreeMap<String, V>,
}

impl<V: FieldValue> ConfigFields<V> {
    pub fn new(file: &Path, fields: impl IntoIterator<Item = (String, V)>) -> Self {
        Self {
            file: file.to_path_buf(),
            fields: fields.into_iter().collect(),
        }
    }

    /// Removes and returns a field: from here on the reader answers for it.
    pub fn take(&mut self, field: &str) -> Option<V> {
        self.fields.remove(field)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn contains(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// The error for a field the reader understands but cannot run as configured.
    pub fn refuse(
        &self,
        field: &str,
        value: impl Display,
        reason: impl Into<String>,
    ) -> RuntimeError {
        RuntimeError::UnsupportedConfig {
            file: self.file.clone(),
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Accepts what is left if every field is inert; else refuses the first one.
    pub fn finish(self, inert: impl Fn(&str) -> bool) -> Result<()> {
        match self.fields.iter().find(|(k, _)| !inert(k)) {
            None => Ok(()),
            Some((field, value)) => Err(self.refuse(
                field,
                value.show(),
                "loramux does not implement this field, and it may change the computation",
            )),
        }
    }
}
