//! The `huggingface` Arrow schema metadata: a JSON document
//! `{"info": {"features": {...}}}` written by the `datasets` library. Inputs
//! carry class names in it (`ClassLabel.names`); outputs keep it and describe
//! the columns sieve adds, so `datasets.load_dataset("parquet", ...)` still
//! decodes images and class labels.

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, Schema};
use serde_json::{json, Map, Value};

use crate::error::{Result, SchemaError};

/// The schema metadata key.
pub const KEY: &str = "huggingface";

/// Class names of `label_column`, if the metadata declares it a `ClassLabel`.
pub fn class_names(metadata: &HashMap<String, String>, label_column: &str) -> Result<Option<Vec<String>>> {
    let Some(doc) = metadata.get(KEY) else { return Ok(None) };
    let doc: Value = serde_json::from_str(doc).map_err(|e| SchemaError::HuggingFaceMetadata(e.to_string()))?;
    let names = doc.pointer(&format!("/info/features/{label_column}/names"));
    Ok(names
        .and_then(Value::as_array)
        .map(|names| names.iter().map(|n| n.as_str().map_or_else(|| n.to_string(), str::to_string)).collect()))
}

/// The `datasets` feature describing an Arrow column sieve adds.
fn feature_of(data_type: &DataType) -> Value {
    let dtype = match data_type {
        DataType::Float32 => "float32",
        DataType::Float64 => "float64",
        DataType::Int64 => "int64",
        DataType::Int32 => "int32",
        DataType::UInt64 => "uint64",
        DataType::Boolean => "bool",
        _ => "string",
    };
    json!({"dtype": dtype, "_type": "Value"})
}

/// Returns the metadata of an output whose schema is `schema`: the input's
/// `huggingface` document (or an empty one) with a feature for every column
/// of `schema` it does not describe yet. Columns it describes keep their
/// feature untouched (images stay `Image`, labels keep their names).
pub fn extend(input: &HashMap<String, String>, schema: &Schema) -> Result<HashMap<String, String>> {
    let mut doc: Value = match input.get(KEY) {
        Some(s) => serde_json::from_str(s).map_err(|e| SchemaError::HuggingFaceMetadata(e.to_string()))?,
        None => json!({"info": {"features": {}}}),
    };
    let features = doc
        .pointer_mut("/info/features")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| SchemaError::HuggingFaceMetadata("no info.features object".into()))?;
    let mut ordered = Map::new();
    for field in schema.fields() {
        let feature = features.remove(field.name()).unwrap_or_else(|| feature_of(field.data_type()));
        ordered.insert(field.name().clone(), feature);
    }
    *features = ordered;
    let mut out = input.clone();
    out.insert(KEY.to_string(), doc.to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    fn cifar_metadata() -> HashMap<String, String> {
        let doc = r#"{"info": {"features": {"img": {"_type": "Image"}, "label": {"names": ["airplane", "automobile"], "_type": "ClassLabel"}}}}"#;
        HashMap::from([(KEY.to_string(), doc.to_string())])
    }

    #[test]
    fn class_names_come_from_the_class_label_feature() {
        let names = class_names(&cifar_metadata(), "label").unwrap().unwrap();
        assert_eq!(names, ["airplane", "automobile"]);
        assert_eq!(class_names(&cifar_metadata(), "img").unwrap(), None);
        assert_eq!(class_names(&HashMap::new(), "label").unwrap(), None);
    }

    #[test]
    fn extend_keeps_input_features_and_describes_new_columns() {
        let schema = Schema::new(vec![
            Field::new("img", DataType::Binary, true),
            Field::new("label", DataType::Int64, true),
            Field::new("el2n", DataType::Float32, true),
            Field::new("correct", DataType::Boolean, true),
        ]);
        let out = extend(&cifar_metadata(), &schema).unwrap();
        let doc: Value = serde_json::from_str(&out[KEY]).unwrap();
        assert_eq!(doc["info"]["features"]["img"]["_type"], "Image");
        assert_eq!(doc["info"]["features"]["label"]["names"][1], "automobile");
        assert_eq!(doc["info"]["features"]["el2n"]["dtype"], "float32");
        assert_eq!(doc["info"]["features"]["correct"]["dtype"], "bool");
    }
}
