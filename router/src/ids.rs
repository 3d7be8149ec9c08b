//! Between the index crate's `AdapterKey` and the runtime's `AdapterId`: the same rule,
//! two types, because `index` may not depend on `runtime` (DESIGN).

use loramux_index::AdapterKey;
use loramux_runtime::AdapterId;

use crate::Result;

pub fn to_id(key: &AdapterKey) -> Result<AdapterId> {
    Ok(AdapterId::new(key.as_str())?)
}

pub fn to_key(id: &AdapterId) -> Result<AdapterKey> {
    Ok(AdapterKey::new(id.as_str())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let key = AdapterKey::new("sql-v2.1").unwrap();
        assert_eq!(to_key(&to_id(&key).unwrap()).unwrap(), key);
    }
}
