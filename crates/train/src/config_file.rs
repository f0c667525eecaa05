//! Reading config files: a file gives only the fields it changes, over a preset's defaults; a field the code does
//! not know is refused with its full path (a typo must not be silently ignored); old run directories, written
//! before the LM's geometry left the file format, still load.
//!
//! burn's `Config` derive needs every field in a file. Here the file's JSON is laid over the JSON of the defaults
//! (objects merge key by key, anything else replaces), then read through the config type, so that a preset may be
//! three lines long and the error of a wrongly typed field names its path (`lm.stages[0].steps`).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::TrainError;

/// Reads the config file at `path` over `defaults`.
///
/// # Errors
/// [`TrainError::Config`] naming the file and the line/column of a syntax error, the path of an unknown or
/// wrongly typed field, or [`TrainError::Io`] when the file cannot be read.
pub fn load_with_defaults<T: Serialize + DeserializeOwned>(path: &Path, defaults: &T) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_with_defaults(&text, defaults, |_| {}).map_err(|why| TrainError::Config(format!("{}: {why}", path.display())))
}

/// Parses `text` (JSON) over `defaults`, after `migrate` has rewritten old field names in it.
///
/// # Errors
/// A message with the line/column of a syntax error, or the path of an unknown or wrongly typed field.
pub fn parse_with_defaults<T: Serialize + DeserializeOwned>(
    text: &str,
    defaults: &T,
    migrate: impl FnOnce(&mut Value),
) -> Result<T, String> {
    let mut given: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    migrate(&mut given);
    let mut merged = serde_json::to_value(defaults).map_err(|e| e.to_string())?;
    lay_over(&mut merged, given, "")?;
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = e.path().to_string();
        format!("field `{path}`: {}", e.inner())
    })
}

/// Lays `given` over `base` in place: objects key by key (a key `base` lacks is an error naming its path),
/// anything else replaces.
fn lay_over(base: &mut Value, given: Value, path: &str) -> Result<(), String> {
    match (base, given) {
        (Value::Object(base), Value::Object(given)) => {
            for (key, value) in given {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match base.get_mut(&key) {
                    Some(slot) => lay_over(slot, value, &inner)?,
                    None => {
                        let known: Vec<&str> = base.keys().map(String::as_str).collect();
                        return Err(format!(
                            "unknown field `{inner}` (known here: {}); remove or rename it",
                            known.join(", ")
                        ));
                    }
                }
            }
            Ok(())
        }
        (slot, value) => {
            *slot = value;
            Ok(())
        }
    }
}

/// Rewrites an LM training config written before the file format dropped what the code derives: the LM moved
/// from `lm` to `model`, and its `grid`, `window` and `decoder.max_seq_len` (overwritten per stage, or ignored)
/// are dropped.
pub fn migrate_lm_training(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    if let Some(old) = object.remove("lm")
        && !object.contains_key("model")
    {
        object.insert("model".into(), old);
    }
    if let Some(model) = object.get_mut("model").and_then(Value::as_object_mut) {
        model.remove("grid");
        model.remove("window");
        if let Some(decoder) = model.get_mut("decoder").and_then(Value::as_object_mut) {
            decoder.remove("max_seq_len");
        }
    }
}

/// [`migrate_lm_training`] applied to a run config's `lm`.
pub fn migrate_run(value: &mut Value) {
    if let Some(lm) = value.get_mut("lm") {
        migrate_lm_training(lm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    #[test]
    fn a_file_gives_only_what_it_changes() {
        let config: RunConfig =
            parse_with_defaults(r#"{ "lm": { "batch_size": 3 } }"#, &RunConfig::demo(), |_| {}).unwrap();
        assert_eq!(config.lm.batch_size, 3);
        let mut expected = RunConfig::demo();
        expected.lm.batch_size = 3;
        assert_eq!(
            serde_json::to_value(config).unwrap(),
            serde_json::to_value(expected).unwrap()
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named_by_path() {
        let err = parse_with_defaults(r#"{ "lm": { "stpes": 3 } }"#, &RunConfig::demo(), |_| {}).unwrap_err();
        assert!(
            err.contains("unknown field `lm.stpes`") && err.contains("stages"),
            "{err}"
        );
        let err = parse_with_defaults(
            r#"{ "lm": { "stages": [{ "resolution": 64, "window": 2, "steps": "many", "learning_rate": 1 }] } }"#,
            &RunConfig::demo(),
            |_| {},
        )
        .unwrap_err();
        assert!(err.contains("lm.stages[0].steps"), "{err}");
        let err = parse_with_defaults("{ \"lm\": ", &RunConfig::demo(), |_| {}).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn an_old_run_config_with_the_derived_fields_still_loads() {
        let mut old = serde_json::to_value(RunConfig::tiny()).unwrap();
        let lm = old["lm"].as_object_mut().unwrap();
        let mut model = lm.remove("model").unwrap();
        model["grid"] = serde_json::json!([8, 8]);
        model["window"] = serde_json::json!(2);
        model["decoder"]["max_seq_len"] = serde_json::json!(0);
        lm.insert("lm".into(), model);
        let text = old.to_string();
        assert!(
            parse_with_defaults(&text, &RunConfig::demo(), |_| {}).is_err(),
            "unknown without migration"
        );
        let loaded: RunConfig = parse_with_defaults(&text, &RunConfig::demo(), migrate_run).unwrap();
        assert_eq!(
            serde_json::to_value(loaded).unwrap(),
            serde_json::to_value(RunConfig::tiny()).unwrap()
        );
    }
}
