//! Image history entries the way BuildKit writes them.
use crate::image::History;

pub const COMMENT: &str = "buildkit.dockerfile.v0";

/// RFC 3339 `created` time: SOURCE_DATE_EPOCH when given, else now.
pub fn timestamp(epoch: Option<i64>) -> String {
    let t = match epoch {
        Some(e) => chrono::DateTime::from_timestamp(e, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    };
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn entry(created_by: String, empty_layer: bool, epoch: Option<i64>) -> History {
    History {
        created: Some(timestamp(epoch)),
        created_by: Some(created_by),
        author: None,
        comment: Some(COMMENT.into()),
        empty_layer,
    }
}

/// Go's `%v` of a string slice, as BuildKit prints CMD/ENTRYPOINT/VOLUME.
pub fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// JSON array form, as BuildKit prints CMD/ENTRYPOINT/SHELL in history.
pub fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
