//! Field-by-field reading of untrusted JSON objects, so that every validation error names the
//! JSON path of the field at fault (`config.guardrailConfig.trace`, `capacity[2].period`).

use serde_json::{Map, Value};

use crate::{Error, Result};

/// A JSON object being validated, with the path that leads to it.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

/// Joins a parent path and a key the way errors show them. An empty key (`{"": 1}`) is
/// shown as `[""]`, so that an error about it still names a field.
pub fn join(path: &str, key: &str) -> String {
    if key.is_empty() {
        format!("{path}[\"\"]")
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A short name of a JSON value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    pub fn new(v: &'a Value, path: &str) -> Result<Self> {
        match v {
            Value::Object(map) => Ok(Self {
                map,
                path: path.to_owned(),
            }),
            other => Err(Error::invalid(
                if path.is_empty() { "body" } else { path },
                format!("must be a JSON object, got {}", type_name(other)),
            )),
        }
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The raw value, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Rejects keys outside `allowed`.
    pub fn deny_unknown(&self, allowed: &[&str]) -> Result<()> {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(Error::invalid(
                    self.path(key),
                    format!("unknown field; allowed fields are: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(Error::invalid(
                self.path(key),
                format!("must be a string, got {}", type_name(other)),
            )),
        }
    }

    pub fn str_req(&self, key: &str) -> Result<&'a str> {
        self.str_opt(key)?
            .ok_or_else(|| Error::invalid(self.path(key), "is required"))
    }

    /// A string that must not be empty or blank.
    pub fn nonempty_str_req(&self, key: &str) -> Result<&'a str> {
        let s = self.str_req(key)?;
        if s.trim().is_empty() {
            return Err(Error::invalid(self.path(key), "must not be empty"));
        }
        Ok(s)
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Error::invalid(
                self.path(key),
                format!("must be a boolean, got {}", type_name(other)),
            )),
        }
    }

    /// A positive integer (1 ..= 2^53, the range JSON numbers carry exactly).
    pub fn positive_int_opt(&self, key: &str) -> Result<Option<u64>> {
        const MAX: u64 = 1 << 53;
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (1..=MAX).contains(&v) => Ok(Some(v)),
                _ => Err(Error::invalid(
                    self.path(key),
                    format!("must be a positive integer no greater than {MAX}"),
                )),
            },
            Some(other) => Err(Error::invalid(
                self.path(key),
                format!("must be a positive integer, got {}", type_name(other)),
            )),
        }
    }

    pub fn obj_opt(&self, key: &str) -> Result<Option<Obj<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, &self.path(key)).map(Some),
        }
    }

    pub fn array_opt(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(Error::invalid(
                self.path(key),
                format!("must be an array, got {}", type_name(other)),
            )),
        }
    }

    /// One of a fixed set of string values.
    pub fn enum_opt<T: Copy>(&self, key: &str, values: &[(&str, T)]) -> Result<Option<T>> {
        let Some(s) = self.str_opt(key)? else {
            return Ok(None);
        };
        values
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| Some(*v))
            .ok_or_else(|| {
                let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
                Error::invalid(
                    self.path(key),
                    format!("must be one of: {}", names.join(", ")),
                )
            })
    }
}

/// RFC 7396 JSON Merge Patch: `patch` applied onto `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1]});
        merge_patch(&mut t, &json!({"a": {"b": 1}}));
        assert_eq!(t, json!({"a": {"b": 1}}));
    }

    #[test]
    fn errors_name_the_field_path() {
        let v = json!({"cfg": {"n": "x"}});
        let o = Obj::new(&v, "").and_then(|o| o.obj_opt("cfg"));
        let cfg = match o {
            Ok(Some(c)) => c,
            _ => unreachable!("cfg is an object"),
        };
        match cfg.positive_int_opt("n") {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "cfg.n"),
            other => unreachable!("expected an invalid-field error, got {other:?}"),
        }
    }
}
